# pragma version ~=0.4.3
"""
@title Scriptable liquidator contract for tests of the Controller's callback and ETH paths
@notice Test fixture only. As a callbacker it implements both callback_liquidate overloads:
        callback_args = [stablecoins_to_return, collateral_to_return, tamper, i, amount]
        (missing entries are 0). With tamper = 1 it first trades `amount` of coin i on the AMM,
        which the Controller must reject (band-invariance check). It records what it was called
        with. As a liquidator it forwards arbitrary calls (`execute`), so it can be msg.sender of
        liquidate(); it accepts native ETH only when accept_eth is set.
"""
from ethereum.ercs import IERC20

interface LLAMMA:
    def exchange(i: uint256, j: uint256, in_amount: uint256, min_amount: uint256) -> uint256[2]: nonpayable

owner: public(address)
amm: public(address)
accept_eth: public(bool)
calls: public(uint256)
last_user: public(address)
last_stablecoins: public(uint256)
last_collateral: public(uint256)
last_debt: public(uint256)
last_args: public(DynArray[uint256, 5])
last_bytes_hash: public(bytes32)
last_selector: public(bytes4)


@deploy
def __init__(controller: address, amm: address, borrowed: address, collateral: address):
    self.owner = msg.sender
    self.amm = amm
    assert extcall IERC20(borrowed).approve(controller, max_value(uint256), default_return_value=True)
    assert extcall IERC20(collateral).approve(controller, max_value(uint256), default_return_value=True)
    assert extcall IERC20(borrowed).approve(amm, max_value(uint256), default_return_value=True)
    assert extcall IERC20(collateral).approve(amm, max_value(uint256), default_return_value=True)


@external
def set_accept_eth(accept: bool):
    assert msg.sender == self.owner
    self.accept_eth = accept


@external
@payable
def execute(target: address, data: Bytes[2048]) -> Bytes[1024]:
    """
    @notice Call `target` with `data` (and msg.value) as this contract; bubbles up reverts
    """
    assert msg.sender == self.owner
    return raw_call(target, data, value=msg.value, max_outsize=1024)


@external
@payable
def __default__():
    assert self.accept_eth, "no ETH"


@internal
def _handle(user: address, stablecoins: uint256, collateral: uint256, debt: uint256, args: DynArray[uint256, 5]) -> (uint256, uint256):
    self.calls += 1
    self.last_user = user
    self.last_stablecoins = stablecoins
    self.last_collateral = collateral
    self.last_debt = debt
    self.last_args = args
    cfg: uint256[5] = empty(uint256[5])
    for k: uint256 in range(5):
        if k == len(args):
            break
        cfg[k] = args[k]
    if cfg[2] == 1:
        extcall LLAMMA(self.amm).exchange(cfg[3], 1 - cfg[3], cfg[4], 0)
    return cfg[0], cfg[1]


@external
def callback_liquidate(
    user: address,
    stablecoins: uint256,
    collateral: uint256,
    debt: uint256,
    callback_args: DynArray[uint256, 5],
    callback_bytes: Bytes[10**4] = b"",
) -> (uint256, uint256):
    """
    @notice Both overloads (0x4ea696bb without bytes, 0x750abc51 with bytes); records which one
            was called and the keccak of the bytes
    @return (stablecoins, collateral) the Controller pulls from this contract
    """
    self.last_selector = convert(slice(msg.data, 0, 4), bytes4)
    self.last_bytes_hash = keccak256(callback_bytes)
    return self._handle(user, stablecoins, collateral, debt, callback_args)
