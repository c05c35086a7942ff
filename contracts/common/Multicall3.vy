# pragma version ~=0.4.3
"""
@title Multicall3-compatible aggregator for local chains
@notice Same selectors and return encoding as Multicall3 (0xcA11bde05977b3631167028862bE2a173976CA11)
        for `aggregate3`, `getBlockNumber`, `getCurrentBlockTimestamp`, `getEthBalance`,
        `getBasefee` and `getChainId`. Vyper needs static bounds, so this one is limited to
        MAX_CALLS calls per batch, MAX_IN bytes of calldata and MAX_OUT bytes of return data per
        call. A call whose return data is longer than MAX_OUT reports failure instead of being
        truncated, so a caller never decodes a cut-off answer. The keeper only batches small
        fixed-size views through it; large answers (users_to_liquidate) go by direct eth_call.
"""

MAX_CALLS: constant(uint256) = 256
MAX_IN: constant(uint256) = 260
MAX_OUT: constant(uint256) = 512

struct Call3:
    target: address
    allowFailure: bool
    callData: Bytes[MAX_IN]

struct Result:
    success: bool
    returnData: Bytes[MAX_OUT + 1]  # never longer than MAX_OUT: longer answers are reported as failures


@external
def aggregate3(calls: DynArray[Call3, MAX_CALLS]) -> DynArray[Result, MAX_CALLS]:
    results: DynArray[Result, MAX_CALLS] = []
    for c: Call3 in calls:
        ok: bool = False
        out: Bytes[MAX_OUT + 1] = b""
        ok, out = raw_call(c.target, c.callData, max_outsize=MAX_OUT + 1, revert_on_failure=False)
        if len(out) > MAX_OUT:
            # Too long to return whole: report failure rather than a truncated answer.
            assert c.allowFailure, "Multicall3: call failed"
            results.append(Result(success=False, returnData=b""))
            continue
        if not ok:
            assert c.allowFailure, "Multicall3: call failed"
        results.append(Result(success=ok, returnData=out))
    return results


@external
@view
def getBlockNumber() -> uint256:
    return block.number


@external
@view
def getCurrentBlockTimestamp() -> uint256:
    return block.timestamp


@external
@view
def getEthBalance(addr: address) -> uint256:
    return addr.balance


@external
@view
def getBasefee() -> uint256:
    return block.basefee


@external
@view
def getChainId() -> uint256:
    return chain.id
