"""`keeper fork`: an anvil fork of a real chain, the keeper funded on it and a ready config; `keeper fork
move MARKET PCT` moves a market's oracle on the running fork (with its AMM arbitraged).

    keeper fork --preset crvusd-ethereum --fork-url https://eth.example/KEY [--block N] [--workdir fork]
                [--fund-native 100] [--fund-stablecoin 100000] [--stablecoin-holder 0x…]
    keeper fork --protocol-file my.toml --fork-url http://127.0.0.1:8545      # no preset: any deployment
    keeper fork move ETH -8% [--workdir fork] [--via auto|impersonate|storage|replace] [--advance 900] [--steps N]

The protocol table comes from a preset (keeper/presets.py) or from `--protocol-file FILE.toml` holding
[[protocols]] tables and a [pricing] table, like keeper.toml's; `--set protocols.0.start_block=N` (any
dotted setting) overrides the written config. The keeper's key: a fresh fork-only keystore in the work
folder (`keystore.json` + `keystore.password`, mode 600, reused on restart), or `--key-env NAME` to use
the private key in that environment variable (the config then names the variable; the key is never
written or printed). How funding and oracle moves are found on-chain: keeper/devtools/fork.py.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

NAME = "fork"
HELP = "anvil fork of a real chain with the keeper funded and a ready config; `fork move` moves an oracle"

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset name (keeper/presets.py), e.g. crvusd-ethereum")
    parser.add_argument("--protocol-file", help="TOML with [[protocols]] table(s) and a [pricing] table (instead of --preset)")
    parser.add_argument("--fork-url", help="RPC URL of the chain to fork")
    parser.add_argument("--block", type=int, help="fork at this block (default: the latest)")
    parser.add_argument("--workdir", default="fork", help="folder for keeper.toml, fork.json, keystore, state (default: fork)")
    parser.add_argument("--port", type=int, default=0, help="local port of the fork's RPC (default: a free one)")
    parser.add_argument("--block-time", type=float, help="mine a block every N seconds (default: one per transaction)")
    parser.add_argument("--fund-native", default="100", help="native tokens given to the keeper (default: 100)")
    parser.add_argument("--fund-stablecoin", help="stablecoin (token units, e.g. 100000) given to the keeper")
    parser.add_argument("--stablecoin", help="the token --fund-stablecoin funds (default: the preset's / the protocol's)")
    parser.add_argument(
        "--stablecoin-holder", help="fund by transferring from this holder (impersonated) instead of a storage write"
    )
    parser.add_argument("--key-env", help="use the private key in this environment variable instead of a fork-only keystore")
    parser.add_argument("--http-listen", default="", help="http.listen of the written config (default: disabled)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting of the written config (repeatable)"
    )
    sub = parser.add_subparsers(dest="fork_command")
    move = sub.add_parser("move", help="move a market's oracle by PCT (e.g. -8%%) on the running fork, AMM arbitraged")
    move.add_argument("market", help="perp market key (ETH), LLAMMA market index (0) or collateral symbol, or an address")
    move.add_argument("pct", help="percent change, e.g. -8%% or 5%%")
    move.add_argument("--workdir", default="fork", help="the running fork's folder (default: fork)")
    move.add_argument(
        "--via",
        choices=("auto", "impersonate", "storage", "replace"),
        default="auto",
        help="how to move the oracle: its owner's setter, its price storage word, or the AMM pointed at a settable oracle "
        "(default auto: each in turn)",
    )
    move.add_argument("--advance", type=int, help="seconds to let pass afterwards (default: perp 900 for the TWAP, LLAMMA 0)")
    move.add_argument("--steps", type=int, help="LLAMMA: oracle updates, each followed by arbitrage (default: one per 2 %%)")
    # "-8%" is an argument here, not an option
    move._negative_number_matcher = re.compile(r"^-\d+(\.\d+)?%?$|^-\.\d+%?$")


def _err(msg: str) -> None:
    print(f"keeper fork: {msg}", file=sys.stderr, flush=True)


def _say(msg: str = "") -> None:
    print(msg, flush=True)


class UsageError(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    from keeper.devtools.fork import ForkError  # noqa: PLC0415 - heavy imports only when run

    try:
        if getattr(args, "fork_command", None) == "move":
            return _move(args)
        return _start(args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ForkError as exc:
        _err(str(exc))
        return EXIT_FAILURE


# ---- move --------------------------------------------------------------------------------------


def _move(args: argparse.Namespace) -> int:
    from keeper.devtools.anvil import AnvilError  # noqa: PLC0415
    from keeper.devtools.fork import ForkError, Node, move_market, pid_alive, read_state  # noqa: PLC0415
    from keeper.devtools.scenario import parse_pct  # noqa: PLC0415 - same PCT as `keeper sandbox move`

    try:
        pct = parse_pct(args.pct)
    except ValueError as exc:
        raise UsageError(f"pct: {exc}") from None
    if args.advance is not None and args.advance < 0:
        raise UsageError("--advance: must be ≥ 0 seconds")
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps: must be ≥ 1")
    state = read_state(Path(args.workdir))
    if not pid_alive(int(state.get("pid", 0))):
        raise ForkError(f"the fork in {args.workdir} is not running (pid {state.get('pid')} is gone): start it again")
    node = Node(state["rpc_url"])
    try:
        res = move_market(node, state["protocols"], args.market, pct, via=args.via, advance=args.advance, steps=args.steps)
    except AnvilError as exc:
        raise ForkError(f"fork node {state['rpc_url']}: {exc}") from None
    except KeyError as exc:
        raise ForkError(f"{args.workdir}/fork.json is incomplete ({exc})") from None
    from keeper.units import fmt_units  # noqa: PLC0415

    _say(f"{res.market}: oracle {fmt_units(res.before, 18, 4)} → {fmt_units(res.target, 18, 4)} ({args.pct}) by {res.how}")
    _say(f"{res.market}: AMM arbitraged to the new price in {res.trades} trade(s); fork at block {node.block_number()}")
    return EXIT_OK


# ---- start -------------------------------------------------------------------------------------


def _parse_set(items: list[str]) -> list[tuple[list[str], Any]]:
    import json  # noqa: PLC0415

    out = []
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. protocols.0.start_block=19000000")
        value: Any = raw
        if re.fullmatch(r"-?\d+", raw.strip()):
            value = int(raw)
        elif raw.strip().lower() in ("true", "false"):
            value = raw.strip().lower() == "true"
        elif raw.strip()[:1] in "[{":
            try:
                value = json.loads(raw)
            except ValueError:
                raise UsageError(f"--set {key}: invalid JSON value") from None
        out.append((key.strip().split("."), value))
    return out


def _apply_set(cfg: dict, path: list[str], value: Any) -> None:
    node: Any = cfg
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise UsageError(f"--set {'.'.join(path)}: no list item {part}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise UsageError(f"--set {'.'.join(path)}: {part} is not a table")


ADDRESS_FIELDS = ("clearing_house", "factory", "feed", "controller", "amm")


def _protocols(args: argparse.Namespace) -> tuple[list[dict], dict | None, Any]:
    """([[protocols]] tables, [pricing] or None, the preset or None)."""
    import tomllib  # noqa: PLC0415

    from eth_utils import is_address  # noqa: PLC0415

    from keeper import presets  # noqa: PLC0415

    if bool(args.preset) == bool(args.protocol_file):
        raise UsageError("give exactly one of --preset NAME or --protocol-file FILE.toml")
    if args.preset:
        try:
            p = presets.preset(args.preset)
        except KeyError as exc:
            raise UsageError(f"--preset: {exc.args[0]}") from None
        for k, v in [*p.protocol.items(), *p.native_price.items()]:
            if k in ADDRESS_FIELDS and not (isinstance(v, str) and v.startswith("0x") and is_address(v)):
                raise UsageError(f"preset {p.name}: {k} = {v!r} is not a valid address")
        if p.stablecoin is not None and not is_address(p.stablecoin):
            raise UsageError(f"preset {p.name}: stablecoin {p.stablecoin!r} is not a valid address")
        # the config names the preset (expanded by config loading); --set keys beside it override it
        return [{"preset": p.name}], None, p
    path = Path(args.protocol_file)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--protocol-file: {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"--protocol-file: {path}: {exc}") from None
    protos = data.get("protocols")
    if not isinstance(protos, list) or not protos or not all(isinstance(x, dict) for x in protos):
        raise UsageError(f"--protocol-file: {path} needs at least one [[protocols]] table")
    extra = sorted(set(data) - {"protocols", "pricing"})
    if extra:
        raise UsageError(f"--protocol-file: {path}: unexpected table(s) {', '.join(extra)} (only [[protocols]] and [pricing])")
    for i, proto in enumerate(protos):
        proto.setdefault("name", f"{proto.get('kind', 'protocol')}{i}")
    pricing = data.get("pricing")
    return protos, pricing if isinstance(pricing, dict) else None, None


def _workdir(path: Path) -> None:
    from keeper.devtools.fork import MARKER, STATE_FILE, pid_alive, read_state  # noqa: PLC0415

    if path.exists() and not path.is_dir():
        raise UsageError(f"--workdir: {path} is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise UsageError(f"--workdir: {path} is not empty and was not made by `keeper fork` (nothing is deleted): pick another")
    if (path / STATE_FILE).exists():
        try:
            pid = int(read_state(path).get("pid", 0))
        except Exception:  # noqa: BLE001 - an unreadable old state file: overwritten below
            pid = 0
        if pid and pid_alive(pid):
            raise UsageError(f"--workdir: a fork is already running from {path} (pid {pid}): stop it first (Ctrl-C)")
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by `keeper fork`\n")


def _key(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    """(keeper address, [key] table). Never prints key material."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from eth_account import Account  # noqa: PLC0415
    from eth_utils import to_checksum_address  # noqa: PLC0415

    if args.key_env:
        raw = os.environ.get(args.key_env, "")
        if not raw:
            raise UsageError(f"--key-env: environment variable {args.key_env} is not set")
        try:
            address = Account.from_key(raw.strip()).address
        except Exception:  # noqa: BLE001 - never echo the value
            raise UsageError(f"--key-env: environment variable {args.key_env} does not hold a valid private key") from None
        return address, {"private_key_env": args.key_env}
    keystore, password_file = workdir / "keystore.json", workdir / "keystore.password"
    if keystore.exists() and password_file.exists():
        try:
            address = to_checksum_address("0x" + json.loads(keystore.read_text())["address"])
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"--workdir: {keystore} is not a keystore (delete it to make a new fork key)") from None
        return address, {
            "keystore": str(keystore.resolve()),
            "password_file": str(password_file.resolve()),
            "address": address,
        }
    password = secrets.token_hex(16)
    account = Account.create()
    # a fork-only key: a light scrypt so every `keeper run` on the fork starts fast
    keyfile = Account.encrypt(account.key, password, kdf="scrypt", iterations=2**14)
    for path, text in ((password_file, password + "\n"), (keystore, json.dumps(keyfile))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o600)
    return account.address, {
        "keystore": str(keystore.resolve()),
        "password_file": str(password_file.resolve()),
        "address": account.address,
    }


def _redact(text: str, url: str) -> str:
    return text.replace(url, "<fork-url>") if url else text


def _start(args: argparse.Namespace) -> int:  # noqa: PLR0915 - one linear start-up sequence
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415
    from decimal import Decimal  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    from eth_utils import is_address, to_checksum_address  # noqa: PLC0415

    import keeper.adapters  # noqa: F401, PLC0415 - registers the protocol kinds
    from keeper.config import ConfigError, parse_config  # noqa: PLC0415
    from keeper.devtools.anvil import AnvilError, AnvilProcess  # noqa: PLC0415
    from keeper.devtools.configfile import to_toml  # noqa: PLC0415
    from keeper.devtools.fork import STATE_FILE, ForkError, Node, list_markets, set_token_balance, write_state  # noqa: PLC0415
    from keeper.units import fmt_units, to_units  # noqa: PLC0415

    if not args.fork_url:
        raise UsageError("--fork-url is required (the RPC URL of the chain to fork)")
    if urlsplit(args.fork_url).scheme not in ("http", "https", "ws", "wss") or not urlsplit(args.fork_url).netloc:
        raise UsageError("--fork-url: not an http(s):// or ws(s):// URL")
    if args.block is not None and args.block < 0:
        raise UsageError("--block: must be ≥ 0")
    if not (0 <= args.port <= 65535):
        raise UsageError("--port: must be 0–65535")
    if args.block_time is not None and args.block_time <= 0:
        raise UsageError("--block-time: must be > 0")
    try:
        native_wei = to_units(args.fund_native, 18)
        if native_wei < 0:
            raise ValueError("must be ≥ 0")
    except (ValueError, ArithmeticError) as exc:
        raise UsageError(f"--fund-native: {exc}") from None
    stable_amount = None
    if args.fund_stablecoin is not None:
        try:
            stable_amount = Decimal(args.fund_stablecoin)
        except ArithmeticError:
            raise UsageError(f"--fund-stablecoin: not a number: {args.fund_stablecoin!r}") from None
        if not stable_amount.is_finite() or stable_amount < 0:
            raise UsageError("--fund-stablecoin: must be a number ≥ 0")
    for opt in ("stablecoin", "stablecoin_holder"):
        v = getattr(args, opt)
        if v is not None and not (v.startswith("0x") and is_address(v)):
            raise UsageError(f"--{opt.replace('_', '-')}: not a valid 0x address")
    sets = _parse_set(args.set)
    protocols, pricing, preset = _protocols(args)
    workdir = Path(args.workdir)
    state_path = (workdir / "keeper.sqlite").resolve()

    def build_config(rpc_url: str, chain_id: int, key: dict) -> dict:
        cfg: dict[str, Any] = {
            "chain": {"rpc_urls": [rpc_url], "chain_id": chain_id, "poll_interval": 0.5},
            "key": key,
            "state": {"path": str(state_path)},
            "http": {"listen": args.http_listen},
            "protocols": [dict(p) for p in protocols],
        }
        if pricing:
            cfg["pricing"] = dict(pricing)
        for path, value in sets:
            _apply_set(cfg, path, value)
        return cfg

    # validate everything we can before starting anything
    try:
        chain_guess = preset.chain_id if preset is not None else 1
        parse_config(build_config("http://127.0.0.1:1", chain_guess, {"private_key_env": "KEEPER_PRIVATE_KEY"}), environ={})
    except ConfigError as exc:
        raise UsageError(f"the fork's config would be invalid: {exc}") from None
    _workdir(workdir)
    for old in ("keeper.sqlite", "keeper.sqlite-wal", "keeper.sqlite-shm", "keeper.sqlite.lock"):
        (workdir / old).unlink(missing_ok=True)  # an earlier fork's index and journal: another chain now
    keeper_addr, key_table = _key(args, workdir)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    anvil_log = workdir / "anvil.log"  # anvil writes the fork URL (maybe with an API key) into it: owner-only
    anvil_log.unlink(missing_ok=True)
    os.close(os.open(anvil_log, os.O_WRONLY | os.O_CREAT, 0o600))
    node_proc = AnvilProcess(
        port=args.port or None,
        fork_url=args.fork_url,
        fork_block_number=args.block,
        block_time=args.block_time,
        log_path=str(anvil_log.resolve()),
    )
    origin = urlsplit(args.fork_url).hostname or "?"
    _say(f"forking {origin}{f' at block {args.block}' if args.block is not None else ''} ...")
    try:
        node_proc.start(ready_timeout=120.0)
    except AnvilError as exc:
        _err(_redact(f"anvil could not fork: {exc}", args.fork_url))
        return EXIT_FAILURE
    try:
        node = Node(node_proc.url, timeout=60.0)
        chain_id = node.chain_id()
        if preset is not None and chain_id != preset.chain_id:
            raise UsageError(f"--fork-url is chain {chain_id}, but preset {preset.name} is for chain {preset.chain_id}")
        fork_block = node.block_number()
        cfg = build_config(node_proc.url, chain_id, key_table)
        try:
            tables = [p.model_dump(mode="json") for p in parse_config(cfg, environ={}).protocols if p.enabled]
        except ConfigError as exc:
            raise UsageError(f"the fork's config would be invalid: {exc}") from None
        for i, proto in enumerate(tables):
            for field in ADDRESS_FIELDS:
                addr = proto.get(field)
                if isinstance(addr, str) and node.rpc("eth_getCode", [addr, "latest"]) in ("0x", "0x0"):
                    raise ForkError(
                        f"protocols[{i}].{field}: no contract at {addr} on the fork "
                        f"(block {fork_block}: before the deployment? another chain?)"
                    )
        node.set_balance(keeper_addr, native_wei)
        _say(f"keeper {keeper_addr}: {fmt_units(native_wei, 18, 4)} native tokens on the fork")
        if stable_amount is not None:
            token = args.stablecoin or (preset.stablecoin if preset is not None else None)
            if token is None:
                token = _discover_stablecoin(node, tables, list_markets)
            token = to_checksum_address(token)
            decimals = int(node.call(token, "decimals()"))
            units = int(stable_amount.scaleb(decimals))
            how = set_token_balance(node, token, keeper_addr, units, from_holder=args.stablecoin_holder)
            _say(f"keeper {keeper_addr}: {fmt_units(units, decimals, 2)} of token {token} ({how})")
        header = f"# written by `keeper fork` ({'preset ' + preset.name if preset else args.protocol_file}); fork of chain {chain_id} at block {fork_block}\n"
        config_path = workdir / "keeper.toml"
        config_path.write_text(header + to_toml(cfg))
        write_state(
            workdir,
            {
                "rpc_url": node_proc.url,
                "chain_id": chain_id,
                "fork_block": fork_block,
                "pid": os.getpid(),
                "anvil_pid": node_proc.pid,
                "keeper": keeper_addr,
                "protocols": tables,
                "config": str(config_path.resolve()),
            },
        )
        _say(f"fork of chain {chain_id} at block {fork_block} listening on {node_proc.url}")
        _say(f"config: {config_path}")
        _say("run the keeper against it (another shell):")
        _say(f"  keeper -c {config_path} run" + (f"    (with {args.key_env} set in that shell)" if args.key_env else ""))
        _say("move a market's oracle (AMM arbitraged):")
        _say(f"  keeper fork move {_example_market(node, tables, list_markets)} -8% --workdir {workdir}")
        _say("Ctrl-C stops the fork (its state is discarded).")
        while not stop.wait(0.5):
            if node_proc.proc is None or node_proc.proc.poll() is not None:
                raise ForkError("the fork's anvil exited unexpectedly (see anvil.log in the work folder)")
        _say("stopping the fork")
        return EXIT_OK
    except AnvilError as exc:
        raise ForkError(_redact(f"fork node: {exc}", args.fork_url)) from None
    finally:
        node_proc.stop()
        (workdir / STATE_FILE).unlink(missing_ok=True)


def _discover_stablecoin(node: Any, protocols: list[dict], list_markets: Any) -> str:
    """The token a keeper pays with: perp quoteAsset(), LLAMMA coins(0) of the first market."""
    from keeper.devtools.fork import ForkError  # noqa: PLC0415

    for proto in protocols:
        markets = list_markets(node, proto)
        if not markets:
            continue
        m = markets[0]
        if m.kind == "perp_v1":
            return str(node.call(m.amm, "quoteAsset()", out="address"))
        return str(node.call(m.amm, "coins(uint256)", 0, out="address"))
    raise ForkError("no market found to discover the stablecoin from: pass --stablecoin ADDRESS")


def _example_market(node: Any, protocols: list[dict], list_markets: Any) -> str:
    try:
        for proto in protocols:
            markets = list_markets(node, proto)
            if markets:
                return str(markets[0].name)
    except Exception:  # noqa: BLE001 - only a hint
        pass
    return "MARKET"
