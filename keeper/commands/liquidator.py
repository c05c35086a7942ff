"""`keeper liquidator deploy|status|sweep`: the keeper's own LLAMMA liquidator contract
(contracts/llamma/Liquidator.vy; README "Liquidator contract (LLAMMA callback mode)").

- `deploy [--keep-proceeds]`: deploys the committed build (abis/llamma/Liquidator.json: no compiler needed)
  with owner = the keeper's address, signed by the keeper's key, simulated (eth_estimateGas) first, fees
  under [gas]'s caps; waits for the receipt and prints the address and the config line to add.
- `status [--liquidator ADDR]`: code, owner (= the keeper?), keep_proceeds, and what the contract holds of
  every configured LLAMMA market's stablecoin and collateral. Read-only like `keeper check`: built with the
  keeper's address only (from the key, or `key.address`), no transaction sender; creates no file.
- `sweep TOKEN [--liquidator ADDR]`: the owner-only `sweep(token)`: simulated, sent, prints the amount.

deploy and sweep send from the keeper's key, so they take the state file's lock (like `keeper run`): they
refuse to run while a keeper daemon on the same state file is running (their nonces would race).
Exit codes: 0 ok; 1 a check or a transaction failed (the message says which); 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keeper.abi import Abi
    from keeper.config import KeeperConfig
    from keeper.keys import Signer
    from keeper.rpc import RpcClient

NAME = "liquidator"
HELP = "deploy, inspect or sweep the keeper's LLAMMA liquidator contract (callback mode)"

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
ARTIFACT = "llamma/Liquidator"  # abis/llamma/Liquidator.json (keeper/devtools/liquidator_artifact.py)
RECEIPT_TIMEOUT = 300.0


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


# ---- the committed build ----------------------------------------------------------------------------


def load_artifact() -> dict[str, Any]:
    """abis/llamma/Liquidator.json: {"abi", "bytecode", "compiler", "source", "source_sha256"}."""
    import json  # noqa: PLC0415

    from keeper.abi import abi_dir  # noqa: PLC0415

    path = abi_dir() / f"{ARTIFACT}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CommandError(f"the liquidator build {path} is missing (python -m keeper.devtools.liquidator_artifact)") from None
    if not isinstance(data, dict) or not isinstance(data.get("abi"), list) or not str(data.get("bytecode", "")).startswith("0x"):
        raise CommandError(f"{path} is not a liquidator build (abi + bytecode)")
    return data


def liquidator_abi() -> Abi:
    """The Liquidator contract's ABI (owner, keep_proceeds, liquidate, sweep, the Liquidation event, ...)."""
    from keeper.abi import Abi  # noqa: PLC0415

    return Abi(ARTIFACT, load_artifact()["abi"])


def deploy_data(owner: str, keep_proceeds: bool) -> bytes:
    """The creation transaction's data: init code + ABI-encoded (owner, keep_proceeds)."""
    from eth_abi import encode as abi_encode  # noqa: PLC0415

    code = bytes.fromhex(load_artifact()["bytecode"][2:])
    return code + abi_encode(["address", "bool"], [owner, keep_proceeds])


# ---- arguments --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="liquidator_command", metavar="{deploy,status,sweep}", required=True)
    dep = sub.add_parser("deploy", help="deploy a Liquidator owned by the keeper's key; prints the config line")
    dep.add_argument(
        "--keep-proceeds",
        action="store_true",
        help="proceeds stay in the contract until `sweep` (default: each liquidation's profit goes to the owner)",
    )
    st = sub.add_parser("status", help="code, owner, keep_proceeds and token balances of the liquidator (read-only)")
    sw = sub.add_parser("sweep", help="send the contract's whole balance of TOKEN to the owner (owner only)")
    sw.add_argument("token", help="ERC-20 token address")
    for p in (st, sw):
        p.add_argument("--liquidator", metavar="ADDRESS", help="the contract (default: `liquidator` of the llamma protocol)")
        p.add_argument("--protocol", metavar="NAME", help="the llamma protocol section to use when there are several")
    for p in (dep, sw):
        p.add_argument(
            "--timeout",
            type=float,
            default=RECEIPT_TIMEOUT,
            help=f"seconds to wait for the receipt (default {RECEIPT_TIMEOUT:g})",
        )


def _err(msg: str) -> None:
    print(f"keeper liquidator: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - heavy imports only when the command runs

    import keeper.adapters  # noqa: F401, PLC0415 - registers the protocol kinds
    from keeper.config import ConfigError, load_config  # noqa: PLC0415
    from keeper.keys import KeyLoadError  # noqa: PLC0415
    from keeper.log import configure_logging  # noqa: PLC0415
    from keeper.rpc import RpcError, RpcUnavailable  # noqa: PLC0415

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _err(f"invalid config: {exc}")
        return EXIT_CONFIG
    configure_logging(cfg.log.level, cfg.log.format)
    command = args.liquidator_command
    try:
        if command == "deploy":
            return asyncio.run(_deploy(cfg, args.keep_proceeds, args.timeout))
        if command == "status":
            return asyncio.run(_status(cfg, args.liquidator, args.protocol))
        return asyncio.run(_sweep(cfg, args.token, args.liquidator, args.protocol, args.timeout))
    except CommandError as exc:
        _err(str(exc))
        return exc.code
    except KeyLoadError as exc:
        _err(f"invalid key configuration: {exc}")
        return EXIT_CONFIG
    except (RpcError, RpcUnavailable) as exc:
        _err(f"RPC failed: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


# ---- shared pieces ------------------------------------------------------------------------------------


def _liquidators(cfg: KeeperConfig, override: str | None, protocol: str | None) -> list[tuple[Any, str]]:
    """(llamma protocol config, liquidator address) pairs to act on."""
    from keeper.config import _address  # noqa: PLC0415

    llammas = [p for p in cfg.protocols if p.kind == "llamma" and p.enabled]
    if protocol is not None:
        llammas = [p for p in llammas if p.name == protocol]
        if not llammas:
            raise CommandError(f"--protocol: no enabled llamma protocol named {protocol!r}", EXIT_CONFIG)
    if override is not None:
        try:
            address = _address(override)
        except ValueError as exc:
            raise CommandError(f"--liquidator: {exc}", EXIT_CONFIG) from None
        return [(p, address) for p in llammas] or [(None, address)]
    out = [(p, str(getattr(p, "liquidator"))) for p in llammas if getattr(p, "liquidator", None)]  # noqa: B009
    if not out:
        raise CommandError(
            'no liquidator configured: set `liquidator = "0x…"` in the llamma protocol section '
            "(`keeper liquidator deploy` prints it), or pass --liquidator",
            EXIT_CONFIG,
        )
    return out


def _one_liquidator(cfg: KeeperConfig, override: str | None, protocol: str | None) -> str:
    addresses = sorted({a for _, a in _liquidators(cfg, override, protocol)})
    if len(addresses) > 1:
        raise CommandError(f"several liquidators are configured ({', '.join(addresses)}): pick one with --protocol", EXIT_CONFIG)
    return addresses[0]


def _rpc(cfg: KeeperConfig) -> RpcClient:
    from keeper.rpc import RpcClient  # noqa: PLC0415

    return RpcClient(
        list(cfg.chain.rpc_urls),
        timeout=cfg.chain.request_timeout,
        max_retries=cfg.chain.max_retries,
        batch_size=cfg.chain.batch_size,
    )


async def _check_chain(cfg: KeeperConfig, rpc: RpcClient) -> None:
    from keeper.rpc import RpcUnavailable  # noqa: PLC0415

    try:
        chain_id = await rpc.chain_id()
    except RpcUnavailable as exc:
        raise CommandError(f"RPC unreachable: {exc}") from None
    if chain_id != cfg.chain.chain_id:
        raise CommandError(
            f"chain id mismatch: the RPC serves chain {chain_id}, config says chain.chain_id = {cfg.chain.chain_id}"
        )


def _lock(cfg: KeeperConfig) -> Any:
    """The state file's lock (as `keeper run` holds it), so no daemon on the same key sends meanwhile; None
    when the state is in memory or its folder does not exist (no daemon can be using it)."""
    from keeper.statelock import StateLocked, acquire_state_lock  # noqa: PLC0415

    path = cfg.state.path
    if str(path) == ":memory:" or not path.absolute().parent.is_dir():
        return None
    try:
        return acquire_state_lock(path)
    except StateLocked as exc:
        raise CommandError(f"{exc}: stop that keeper first (its transactions would race this one's nonce)", EXIT_CONFIG) from None


async def _call(rpc: RpcClient, to: str, fn: Any, *args: Any, block: int | str = "latest") -> Any:
    return fn.decode_one(await rpc.eth_call(to, fn.encode(*args), block=block))


async def _token_meta(rpc: RpcClient, token: str) -> tuple[str, int]:
    """(symbol, decimals); ("?", 0) parts when the token does not answer."""
    from eth_abi import decode as abi_decode  # noqa: PLC0415

    from keeper.abi import abi  # noqa: PLC0415
    from keeper.rpc import RpcError, call_object  # noqa: PLC0415

    erc20 = abi("common/ERC20")
    answers = await rpc.batch(
        [
            ("eth_call", [call_object(token, erc20.fn("symbol").encode()), "latest"]),
            ("eth_call", [call_object(token, erc20.fn("decimals").encode()), "latest"]),
        ]
    )
    symbol, decimals = "?", 0
    try:
        if not isinstance(answers[0], RpcError):
            symbol = str(abi_decode(["string"], bytes.fromhex(answers[0][2:]))[0])
        if not isinstance(answers[1], RpcError):
            decimals = int(abi_decode(["uint8"], bytes.fromhex(answers[1][2:]))[0])
    except Exception:  # noqa: BLE001 - a token with odd views: show raw units
        pass
    return symbol, decimals


def _amount(raw: int, decimals: int, symbol: str) -> str:
    from keeper.units import from_units  # noqa: PLC0415

    return f"{format(from_units(raw, decimals).normalize(), 'f')} {symbol} ({raw} base units)"


async def _send(
    cfg: KeeperConfig, rpc: RpcClient, signer: Signer, to: str | None, data: bytes, timeout: float, what: str
) -> dict[str, Any]:
    """Simulate (eth_estimateGas from the keeper), price under [gas]'s caps, sign, send, wait for the receipt
    (bounded). Returns the receipt of a successful transaction; raises CommandError otherwise."""
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    from keeper.gas import FeeCapExceeded, FeePolicy  # noqa: PLC0415
    from keeper.rpc import ExecutionReverted, RpcError  # noqa: PLC0415
    from keeper.types import Block  # noqa: PLC0415

    call: dict[str, Any] = {"from": signer.address, "data": "0x" + data.hex()}
    if to is not None:
        call["to"] = to
    try:
        estimate = int(await rpc.request("eth_estimateGas", [call, "latest"]), 16)
    except ExecutionReverted as exc:
        raise CommandError(f"{what}: the simulation reverted ({exc.reason or 'no reason'}); nothing sent") from None
    policy = FeePolicy(cfg.gas)
    gas_limit = policy.gas_limit(estimate)
    if not policy.fits(gas_limit):
        raise CommandError(
            f"{what}: gas limit {gas_limit} (simulated {estimate}) is above gas.max_gas_limit = {cfg.gas.max_gas_limit}"
        )
    head = Block.from_rpc(await rpc.get_block("latest"))
    gas_price = int(await rpc.request("eth_gasPrice"), 16) if head.base_fee is None else None
    try:
        fees = policy.quote(head.base_fee, head.gas_used, head.gas_limit, gas_price)
    except FeeCapExceeded as exc:
        raise CommandError(f"{what}: {exc}; nothing sent (raise gas.max_fee_per_gas_gwei or wait)") from None
    tx: dict[str, Any] = {
        "chainId": cfg.chain.chain_id,
        "nonce": await rpc.nonce(signer.address, "pending"),
        "value": 0,
        "data": data,
        "gas": gas_limit,
    }
    if to is not None:
        tx["to"] = to
    if fees.legacy:
        tx["gasPrice"] = fees.max_fee_per_gas
    else:
        tx["type"] = 2
        tx["maxFeePerGas"] = fees.max_fee_per_gas
        tx["maxPriorityFeePerGas"] = fees.max_priority_fee_per_gas
    raw, tx_hash = signer.sign(tx)
    try:
        await rpc.send_raw(raw)
    except RpcError as exc:
        if "already known" not in exc.message.lower():
            raise CommandError(f"{what}: the node refused the transaction: {exc.message}") from None
    print(f"{what}: sent {tx_hash} (gas limit {gas_limit}, simulated {estimate}); waiting for the receipt", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while True:
        receipt = await rpc.receipt(tx_hash)
        if receipt is not None:
            break
        if time.monotonic() >= deadline:
            raise CommandError(f"{what}: no receipt for {tx_hash} after {timeout:g}s; it may still be mined (check it)")
        await asyncio.sleep(cfg.chain.poll_interval)  # polling the node for a receipt, bounded by the deadline
    if int(receipt["status"], 16) != 1:
        raise CommandError(f"{what}: transaction {tx_hash} reverted in block {int(receipt['blockNumber'], 16)}")
    return receipt


# ---- deploy -------------------------------------------------------------------------------------------


async def _deploy(cfg: KeeperConfig, keep_proceeds: bool, timeout: float) -> int:
    from eth_utils import to_checksum_address  # noqa: PLC0415

    from keeper.keys import load_signer  # noqa: PLC0415

    artifact = load_artifact()  # a missing build fails before any key is touched
    signer = load_signer(cfg.key)
    data = deploy_data(signer.address, keep_proceeds)
    lock = _lock(cfg)
    try:
        async with _rpc(cfg) as rpc:
            await _check_chain(cfg, rpc)
            receipt = await _send(cfg, rpc, signer, None, data, timeout, "deploy")
            address = to_checksum_address(receipt["contractAddress"])
            code = await rpc.get_code(address)
            if code in ("0x", "", None):
                raise CommandError(f"deploy: no code at {address} after the transaction")
            abi = liquidator_abi()
            owner = to_checksum_address(await _call(rpc, address, abi.fn("owner")))
            keep = bool(await _call(rpc, address, abi.fn("keep_proceeds")))
    finally:
        if lock is not None:
            lock.release()
    if owner != signer.address or keep != keep_proceeds:
        raise CommandError(
            f"deploy: {address} reports owner {owner}, keep_proceeds {keep}; expected {signer.address}, {keep_proceeds}"
        )
    print(f"deployed Liquidator at {address}")
    print(
        f"  owner {owner}, keep_proceeds = {'true' if keep else 'false'}, tx {receipt['transactionHash']}, "
        f"block {int(receipt['blockNumber'], 16)}, gas used {int(receipt['gasUsed'], 16)}, {artifact.get('compiler', '?')}"
    )
    print('add to the [[protocols]] section with kind = "llamma" (with mode = "callback" and a route per market):')
    print(f'  liquidator = "{address}"')
    return EXIT_OK


# ---- status -------------------------------------------------------------------------------------------


async def liquidator_rows(rpc: RpcClient, liquidator: str, keeper: str | None, label: str) -> list[tuple[str, bool, str]]:
    """`check`-style (name, ok, detail) rows for a liquidator contract: code present, owner (= `keeper` when
    given), keep_proceeds, native balance. Read-only (eth_getCode / eth_call / eth_getBalance)."""
    from eth_utils import to_checksum_address  # noqa: PLC0415

    from keeper.rpc import RpcError  # noqa: PLC0415
    from keeper.units import WAD  # noqa: PLC0415

    code = await rpc.get_code(liquidator)
    if code in ("0x", "", None):
        return [(f"{label} code", False, "no contract code")]
    rows = [(f"{label} code", True, f"{(len(code) - 2) // 2} bytes")]
    abi = liquidator_abi()
    try:
        owner = to_checksum_address(await _call(rpc, liquidator, abi.fn("owner")))
        keep = bool(await _call(rpc, liquidator, abi.fn("keep_proceeds")))
    except (RpcError, ValueError) as exc:
        return [*rows, (f"{label} interface", False, f"owner()/keep_proceeds() failed: {exc}")]
    if keeper is None:
        rows.append((f"{label} owner", True, f"{owner} (no key configured: not compared)"))
    else:
        same = owner == to_checksum_address(keeper)
        rows.append((f"{label} owner", same, owner + (" = the keeper" if same else f" ≠ keeper {keeper}")))
    where = "stay in the contract (sweep)" if keep else "go to the owner"
    rows.append((f"{label} keep_proceeds", True, f"{'true' if keep else 'false'}: proceeds {where}"))
    eth = await rpc.balance(liquidator)
    rows.append((f"{label} native balance", True, f"{eth / WAD:.6f}"))
    return rows


async def _status(cfg: KeeperConfig, override: str | None, protocol: str | None) -> int:
    from keeper.daemon import ZERO_ADDRESS, ReadOnlyKeeper, StartupError, keeper_address  # noqa: PLC0415
    from keeper.keys import KeyLoadError  # noqa: PLC0415
    from keeper.log import get_logger  # noqa: PLC0415

    targets = _liquidators(cfg, override, protocol)
    try:
        address: str | None = keeper_address(cfg)  # the key's address (the key object is dropped at once)
    except KeyLoadError:
        address = None
    try:
        keeper = await ReadOnlyKeeper.open(cfg, log=get_logger(), address=address or ZERO_ADDRESS, check_code=False)
    except StartupError as exc:
        raise CommandError(f"startup check failed: {exc}") from None
    rows: list[tuple[str, bool, str]] = []
    try:
        rpc = keeper.rpc
        by_name = {a.name: a for a in keeper.adapters}
        seen: set[str] = set()
        for proto, liq in targets:
            label = f"liquidator {liq}" + (f" ({proto.name})" if proto is not None else "")
            if liq not in seen:
                seen.add(liq)
                rows += await liquidator_rows(rpc, liq, address, label)
            adapter = by_name.get(proto.name) if proto is not None else None
            markets = list(getattr(adapter, "mkts", {}).values()) if adapter is not None else []
            tokens: dict[str, str] = {}
            for m in markets:
                tokens.setdefault(m.stablecoin, f"{m.label} stablecoin")
                tokens.setdefault(m.collateral, f"{m.label} collateral")
            for token, what in tokens.items():
                bal = await _call(rpc, token, _erc20().fn("balanceOf"), liq)
                symbol, decimals = await _token_meta(rpc, token)
                rows.append((f"{label} holds {symbol}", True, f"{_amount(bal, decimals, symbol)} [{what} {token}]"))
    finally:
        await keeper.close()
    for name, good, detail in rows:
        print(f"{'ok ' if good else 'FAIL'}  {name:60s} {detail}")
    ok = all(good for _, good, _ in rows)
    print("liquidator ok" if ok else "liquidator checks failed")
    return EXIT_OK if ok else EXIT_FAILURE


def _erc20() -> Abi:
    from keeper.abi import abi  # noqa: PLC0415

    return abi("common/ERC20")


# ---- sweep -------------------------------------------------------------------------------------------


async def _sweep(cfg: KeeperConfig, token_arg: str, override: str | None, protocol: str | None, timeout: float) -> int:
    from eth_utils import to_checksum_address  # noqa: PLC0415

    from keeper.config import _address  # noqa: PLC0415
    from keeper.keys import load_signer  # noqa: PLC0415

    try:
        token = _address(token_arg)
    except ValueError as exc:
        raise CommandError(f"token: {exc}", EXIT_CONFIG) from None
    liq = _one_liquidator(cfg, override, protocol)
    signer = load_signer(cfg.key)
    abi = liquidator_abi()
    erc20 = _erc20()
    lock = _lock(cfg)
    try:
        async with _rpc(cfg) as rpc:
            await _check_chain(cfg, rpc)
            if await rpc.get_code(liq) in ("0x", "", None):
                raise CommandError(f"no contract code at the liquidator {liq}")
            owner = to_checksum_address(await _call(rpc, liq, abi.fn("owner")))
            if owner != signer.address:
                raise CommandError(
                    f"the liquidator {liq} is owned by {owner}, not by the keeper's key {signer.address}; nothing sent"
                )
            symbol, decimals = await _token_meta(rpc, token)
            before = await _call(rpc, token, erc20.fn("balanceOf"), liq)
            if before == 0:
                print(f"nothing to sweep: {liq} holds 0 {symbol}")
                return EXIT_OK
            receipt = await _send(cfg, rpc, signer, liq, abi.fn("sweep").encode(token), timeout, "sweep")
            block = int(receipt["blockNumber"], 16)
            left = await _call(rpc, token, erc20.fn("balanceOf"), liq, block=block)
    finally:
        if lock is not None:
            lock.release()
    transfer = erc20.event("Transfer")
    swept = 0  # what the receipt shows moving from the contract to the owner
    for log in receipt.get("logs", []):
        if to_checksum_address(log["address"]) == token and log["topics"] and log["topics"][0] == transfer.topic0:
            ev = transfer.decode(log)
            if ev["from"] == liq and ev["to"] == owner:
                swept += int(ev["value"])
    print(f"swept {_amount(swept, decimals, symbol)} from {liq} to {owner} (tx {receipt['transactionHash']}, block {block})")
    if left:
        print(f"  {liq} still holds {_amount(left, decimals, symbol)}")
    return EXIT_OK
