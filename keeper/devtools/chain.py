"""Synchronous web3 helpers for scripting a dev chain (tests, demo, benchmarks).

anvil's default accounts are unlocked, so scenario transactions are sent with eth_sendTransaction.
The keeper's own transactions never go through here: they are signed by the keeper.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint

from keeper.devtools.accounts import ANVIL_ADDRESSES
from keeper.devtools.compile import compile_contract


class TxFailed(RuntimeError):
    def __init__(self, reason: str, receipt: Any = None):
        super().__init__(reason)
        self.reason = reason
        self.receipt = receipt


def revert_reason(exc: Exception) -> str:
    """The revert string of a ContractLogicError ('execution reverted: X' → 'X')."""
    msg = exc.args[0] if exc.args else str(exc)
    if isinstance(msg, str) and msg.startswith("execution reverted: "):
        return msg[len("execution reverted: ") :]
    return str(msg)


class DevChain:
    """A scripted view of one anvil node."""

    def __init__(self, url: str, *, timeout: float = 60.0):
        self.url = url
        self.w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
        self.accounts: tuple[str, ...] = ANVIL_ADDRESSES
        self.admin = ANVIL_ADDRESSES[0]

    # ---- contracts -------------------------------------------------------------------------
    def deploy(self, name: str, *args: Any, sender: str | None = None) -> Contract:
        c = compile_contract(name)
        factory = self.w3.eth.contract(abi=c.abi, bytecode=c.bytecode)
        tx_hash = factory.constructor(*args).transact({"from": sender or self.admin})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        address = receipt["contractAddress"]
        if receipt["status"] != 1 or address is None:
            raise TxFailed(f"deploy of {name} reverted", receipt)
        return self.w3.eth.contract(address=address, abi=c.abi)

    def at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=compile_contract(name).abi)

    def tx(self, call: Any, sender: str | None = None, value: int = 0, gas: int | None = None) -> Any:
        """Send a contract call as `sender`; return the receipt, raise TxFailed(reason) on revert."""
        params: dict[str, Any] = {"from": sender or self.admin, "value": value}
        if gas is not None:
            params["gas"] = gas
        try:
            tx_hash = call.transact(params)
        except ContractLogicError as exc:
            raise TxFailed(revert_reason(exc)) from exc
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise TxFailed("reverted", receipt)
        return receipt

    def expect_revert(self, call: Any, reason: str | None = None, sender: str | None = None) -> str:
        """Assert that `call` reverts (checked by eth_call from `sender`); return the reason."""
        try:
            call.call({"from": sender or self.admin})
        except ContractLogicError as exc:
            got = revert_reason(exc)
            if reason is not None and reason not in got:
                raise AssertionError(f"expected revert {reason!r}, got {got!r}") from exc
            return got
        raise AssertionError(f"expected revert {reason!r}, call succeeded")

    # ---- chain control ---------------------------------------------------------------------
    def rpc(self, method: str, params: list | None = None) -> Any:
        resp = self.w3.provider.make_request(RPCEndpoint(method), params or [])
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def increase_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [seconds])

    def set_next_timestamp(self, ts: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", [ts])

    def advance(self, seconds: int, blocks: int = 1) -> None:
        """Move time forward by `seconds` and mine `blocks` blocks."""
        self.increase_time(seconds)
        self.mine(blocks)

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def block_number(self) -> int:
        return self.w3.eth.block_number

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def revert_to(self, snap: str) -> None:
        if not self.rpc("evm_revert", [snap]):
            raise RuntimeError(f"evm_revert({snap}) failed")

    @contextmanager
    def reverted(self) -> Iterator[DevChain]:
        """Every state change inside is undone afterwards (automining back on, then evm_revert)."""
        snap = self.snapshot()
        try:
            yield self
        finally:
            self.set_automine(True)
            self.revert_to(snap)

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def set_automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", [on])

    def nonce(self, address: str) -> int:
        return self.w3.eth.get_transaction_count(Web3.to_checksum_address(address))


MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"


def install_multicall3(chain: DevChain, address: str = MULTICALL3_ADDRESS) -> str:
    """Put our Multicall3-compatible aggregator's runtime code at the canonical address (anvil_setCode),
    so a bare local anvil looks like a real chain to the keeper's batcher."""
    runtime = compile_contract("common/Multicall3").bytecode_runtime
    chain.rpc("anvil_setCode", [address, runtime])
    return Web3.to_checksum_address(address)
