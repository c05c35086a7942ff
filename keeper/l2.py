"""The L1 part of a transaction's cost on an L2 (`chain.l2`).

On a rollup most of what a liquidation costs is the L1 data fee, which the L2 gas price does not show.
The keeper detects the chain's fee model at startup by eth_call probes (keeper/probe.py; never by
bytecode layout) and prices every plan's L1 part at every head:

- OP stack (`op`): the GasPriceOracle predeploy (0x420000000000000000000000000000000000000F) charges a
  fixed L1 data fee in wei, on top of gas × gas price. The keeper asks it for the fee of the transaction
  it would sign: `getL1FeeUpperBound(size)` where the oracle has it (Fjord; a bound that is never below
  what `getL1Fee` charges), else `getL1Fee(unsigned transaction)`. The transaction is not signed yet when
  it is decided (its gas limit and fees are what the decision produces), so the oracle gets an unsigned
  EIP-1559 encoding (`placeholder_tx`): the real chain id, to, value and data, with the nonce, both fee
  fields and the gas limit as all-0xff integers as long as the largest values the keeper may sign
  (2^32 − 1; the max fee cap; the max gas limit). That is what the oracle's methods take (they add 68
  bytes for the signature), and it is at least as long, with at least as many non-zero bytes, as the one
  that is sent, so neither the size-based (Fjord) nor the byte-counting (Ecotone) formula under-prices it.
- Arbitrum (`arbitrum`): the NodeInterface (0x…C8, a virtual contract: only eth_call answers) gives
  `gasEstimateL1Component(to, false, data)` → (gasEstimateForL1, baseFee, l1BaseFeeEstimate). Those L1
  gas units are charged as L2 gas: the transaction's gas LIMIT must include them (else it fails), and
  they cost gas units × the L2 fee per gas like the rest.

One eth_call per distinct transaction per head, all of a decision's in one JSON-RPC batch (never through
Multicall3: the NodeInterface answers top-level calls only), cached for the head.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import rlp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address, to_checksum_address

from keeper.multicall import Call, CallBatcher, CallFailed
from keeper.probe import PROBE_SENDER, answers
from keeper.rpc import RpcClient, RpcError, RpcUnavailable, TransportError
from keeper.types import Block

L2Kind = Literal["op", "arbitrum", "none"]

OP_GAS_PRICE_ORACLE = to_checksum_address("0x420000000000000000000000000000000000000F")
ARB_NODE_INTERFACE = to_checksum_address("0x00000000000000000000000000000000000000C8")

GET_L1_FEE = keccak(text="getL1Fee(bytes)")[:4]
GET_L1_FEE_UPPER_BOUND = keccak(text="getL1FeeUpperBound(uint256)")[:4]
L1_BASE_FEE = keccak(text="l1BaseFee()")[:4]
GAS_ESTIMATE_L1_COMPONENT = keccak(text="gasEstimateL1Component(address,bool,bytes)")[:4]

PLACEHOLDER_NONCE = 2**32 - 1  # the unsigned encoding's nonce: longer than any nonce the key will use
PROBE_SIZE = 200  # bytes: the transaction size the Fjord probe asks about


@dataclass(frozen=True)
class L1Cost:
    """The L1 part of one transaction's cost: a fixed fee in wei (OP stack) and/or L1 gas units charged
    as L2 gas (Arbitrum: part of the gas limit, paid at the L2 fee per gas)."""

    fee_wei: int = 0
    gas: int = 0

    def wei_at(self, fee_per_gas: int) -> int:
        """Wei this L1 part costs at `fee_per_gas` wei per L2 gas."""
        return self.fee_wei + self.gas * fee_per_gas

    def __add__(self, other: L1Cost) -> L1Cost:
        return L1Cost(self.fee_wei + other.fee_wei, self.gas + other.gas)


NO_L1 = L1Cost()


class L1FeeUnavailable(Exception):
    """The L1 part of a transaction's cost could not be read: it is not priced, so not sent."""


@dataclass(frozen=True)
class L2Model:
    """The chain's L1-fee model, as detected (or configured) at startup."""

    kind: L2Kind
    upper_bound: bool = False  # OP stack: getL1FeeUpperBound answers (Fjord)
    source: str = "none"  # "detected" | "configured"

    def describe(self) -> str:
        if self.kind == "op":
            method = "getL1FeeUpperBound(size)" if self.upper_bound else "getL1Fee(unsigned tx)"
            return f"op ({self.source}): GasPriceOracle {OP_GAS_PRICE_ORACLE}, {method}"
        if self.kind == "arbitrum":
            return f"arbitrum ({self.source}): NodeInterface {ARB_NODE_INTERFACE}, gasEstimateL1Component in the gas limit"
        return f"none ({self.source}): no L1 data fee"


def unsigned_tx(chain_id: int, to: str, data: bytes, value: int, *, nonce: int, max_fee: int, tip: int, gas: int) -> bytes:
    """The unsigned EIP-1559 transaction 0x02 ‖ rlp([chainId, nonce, tip, maxFee, gas, to, value, data, []])."""
    body = rlp.encode([chain_id, nonce, tip, max_fee, gas, to_canonical_address(to), value, data, []])
    return b"\x02" + body


def _all_ff(n: int) -> int:
    """The all-0xff integer of n's byte length (≥ n, the same RLP length, no zero byte)."""
    return (1 << (8 * max(1, (n.bit_length() + 7) // 8))) - 1


def placeholder_tx(chain_id: int, to: str, data: bytes, value: int, *, max_fee: int, max_gas: int) -> bytes:
    """The unsigned transaction the OP oracle is asked about before the real one is signed: its nonce, fee
    fields and gas limit as all-0xff integers of the largest nonce / fee cap / gas limit's length."""
    fee = _all_ff(max_fee)
    return unsigned_tx(chain_id, to, data, value, nonce=PLACEHOLDER_NONCE, max_fee=fee, tip=fee, gas=_all_ff(max_gas))


def _probes(kinds: tuple[str, ...]) -> list[tuple[str, str, bytes, int]]:
    out: list[tuple[str, str, bytes, int]] = []
    if "op" in kinds:
        out += [
            ("op_fee", OP_GAS_PRICE_ORACLE, GET_L1_FEE + abi_encode(["bytes"], [b"\x01" * 32]), 32),
            ("op_base", OP_GAS_PRICE_ORACLE, L1_BASE_FEE, 32),
            ("op_bound", OP_GAS_PRICE_ORACLE, GET_L1_FEE_UPPER_BOUND + abi_encode(["uint256"], [PROBE_SIZE]), 32),
        ]
    if "arbitrum" in kinds:
        data = GAS_ESTIMATE_L1_COMPONENT + abi_encode(["address", "bool", "bytes"], [PROBE_SENDER, False, b"\x01" * 32])
        out.append(("arb", ARB_NODE_INTERFACE, data, 96))
    return out


class L2DetectionError(Exception):
    """chain.l2 names a model whose contract does not answer on this chain."""


async def detect_l2(rpc: RpcClient, setting: str) -> L2Model:
    """The chain's L1-fee model. 'auto': OP stack when the GasPriceOracle predeploy answers getL1Fee and
    l1BaseFee (with getL1FeeUpperBound: Fjord), else Arbitrum when the NodeInterface answers
    gasEstimateL1Component, else none. The probes go out at once. A named model must answer its probe
    (L2DetectionError otherwise); 'none' asks nothing."""
    if setting == "none":
        return L2Model("none", source="configured")
    source = "detected" if setting == "auto" else "configured"
    probes = _probes(("op", "arbitrum") if setting == "auto" else (setting,))
    # a revert (or an empty answer) is "no"; any other error propagates: an L2's fee is never ignored on a doubt
    answered = await asyncio.gather(*(answers(rpc, to, data, min_size=size) for _, to, data, size in probes))
    ok = {name: a for (name, _, _, _), a in zip(probes, answered, strict=True)}
    if ok.get("op_fee") and ok.get("op_base"):
        return L2Model("op", upper_bound=bool(ok.get("op_bound")), source=source)
    if setting == "op":
        raise L2DetectionError(f"chain.l2 = 'op' but the GasPriceOracle at {OP_GAS_PRICE_ORACLE} does not answer getL1Fee")
    if ok.get("arb"):
        return L2Model("arbitrum", source=source)
    if setting == "arbitrum":
        raise L2DetectionError(
            f"chain.l2 = 'arbitrum' but the NodeInterface at {ARB_NODE_INTERFACE} does not answer gasEstimateL1Component"
        )
    return L2Model("none", source=source)


Tx = tuple[str, bytes, int]  # to, data, value


class L2Fees:
    """Reads the L1 part of transactions' costs, batched and cached per head."""

    def __init__(self, rpc: RpcClient, model: L2Model, *, chain_id: int, sender: str, max_fee: int, max_gas: int) -> None:
        self.model = model
        self.chain_id = chain_id
        self.sender = sender
        self.max_fee = max_fee  # wei: the highest max fee (and tip) per gas the keeper signs
        self.max_gas = max_gas  # the highest gas limit it signs
        self.batcher = CallBatcher(rpc, None)  # plain eth_calls in one JSON-RPC batch
        self._head: tuple[int, str] | None = None
        self._cache: dict[Any, L1Cost] = {}

    @property
    def active(self) -> bool:
        return self.model.kind != "none"

    def encoding(self, to: str, data: bytes, value: int) -> bytes:
        """The unsigned transaction the OP oracle is asked about (see the module docstring)."""
        return placeholder_tx(self.chain_id, to, data, value, max_fee=self.max_fee, max_gas=self.max_gas)

    def _call(self, tx: Tx) -> tuple[Any, Call]:
        to, data, value = tx
        if self.model.kind == "arbitrum":
            payload = GAS_ESTIMATE_L1_COMPONENT + abi_encode(["address", "bool", "bytes"], [to, False, data])
            return ("arb", to, data), Call(ARB_NODE_INTERFACE, payload, _decode_arbitrum)
        raw = self.encoding(to, data, value)
        if self.model.upper_bound:
            payload = GET_L1_FEE_UPPER_BOUND + abi_encode(["uint256"], [len(raw)])
            return ("op-bound", len(raw)), Call(OP_GAS_PRICE_ORACLE, payload, _decode_fee)
        return ("op", raw), Call(OP_GAS_PRICE_ORACLE, GET_L1_FEE + abi_encode(["bytes"], [raw]), _decode_fee)

    async def costs(self, txs: list[Tx], head: Block | None) -> list[L1Cost | L1FeeUnavailable]:
        """The L1 part of each transaction's cost at `head` (None: the latest block, not cached); what could
        not be read is an L1FeeUnavailable."""
        if not self.active or not txs:
            return [NO_L1] * len(txs)
        if head is None:
            self._head, self._cache = None, {}
        elif self._head != (head.number, head.hash):
            self._head, self._cache = (head.number, head.hash), {}
        keyed = [self._call(tx) for tx in txs]
        got = dict(self._cache)  # this call's answers, whatever another head does to the cache meanwhile
        missing: dict[Any, Call] = {}
        for key, call in keyed:
            if key not in got:
                missing.setdefault(key, call)
        failed: dict[Any, str] = {}
        if missing:
            try:
                block: int | str = head.number if head is not None else "latest"
                results = await self.batcher.run(list(missing.values()), block, sender=self.sender)
            except (RpcError, TransportError, RpcUnavailable) as exc:
                results = [CallFailed(c, str(exc)) for c in missing.values()]
            for key, r in zip(missing, results, strict=True):
                if isinstance(r, CallFailed):
                    failed[key] = r.reason
                else:
                    got[key] = self._cache[key] = r
        return [got[k] if k in got else L1FeeUnavailable(f"L1 fee: {failed.get(k, 'unread')}") for k, _ in keyed]


def _decode_fee(ret: bytes) -> L1Cost:
    (fee,) = abi_decode(["uint256"], ret)
    return L1Cost(fee_wei=int(fee))


def _decode_arbitrum(ret: bytes) -> L1Cost:
    gas, _base_fee, _l1_base_fee = abi_decode(["uint64", "uint256", "uint256"], ret)
    return L1Cost(gas=int(gas))
