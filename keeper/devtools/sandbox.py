"""`keeper sandbox`: a local anvil chain with the reference protocols that stays up for a developer.

    keeper sandbox [--workdir sandbox] [--resume | --reset] [--port P] [--block-time S]

A fresh sandbox starts anvil (60 unlocked test accounts, clock 30 days behind wall time), deploys
the world of keeper/devtools/scenario.py (Perp v1 ETH/BTC with 30 positions, a crvUSD LLAMMA
market with 15 loans), creates a keeper key (a new random key in an encrypted keystore, its
password in a file beside it, both mode 600) funded with native ETH and a crvUSD inventory, and
writes into the workdir:

    keeper.toml           a config `keeper run` accepts, pointing at the sandbox chain
    sandbox.json          rpc url, addresses and accounts, read by `keeper sandbox move|open`
    keeper-keystore.json  the keeper's key (eth-account scrypt keystore) and keeper-password
    chain-state.json      the chain, dumped by anvil when the sandbox stops (Ctrl-C / SIGTERM)

While it runs it mines an empty block every `--block-time` seconds when nothing else did (a chain
that moves like a real one: confirmations and head staleness behave), with automining for every
transaction. `--resume` reloads chain-state.json and serves the same addresses (and, if it is free,
the same port). Per docs/PROTOCOLS.md §L anvil stamps blocks after a reload with its start clock,
which could go back in time: the sandbox sets the next block's timestamp just after the last saved
one, so the chain's clock continues where it stopped (still behind wall time), and the keeper's own
reorg check tolerates the placeholder hashes of reloaded blocks (it re-anchors).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

E = 10**18
MARKER = ".keeper-sandbox"
STATE_FILE = "chain-state.json"
STATE_TMP = "chain-state.json.new"
INFO_FILE = "sandbox.json"
CONFIG_FILE = "keeper.toml"
KEYSTORE_FILE = "keeper-keystore.json"
PASSWORD_FILE = "keeper-password"
KEEPER_STATE = "keeper-state.sqlite"
# every file a sandbox writes into its folder (--reset removes these and nothing else)
SANDBOX_FILES = (
    CONFIG_FILE,
    INFO_FILE,
    INFO_FILE + ".tmp",
    KEYSTORE_FILE,
    PASSWORD_FILE,
    STATE_FILE,
    STATE_TMP,
    "anvil.log",
    "sandbox.lock",
    KEEPER_STATE,
    KEEPER_STATE + "-wal",
    KEEPER_STATE + "-shm",
    KEEPER_STATE + "-journal",
    KEEPER_STATE + ".lock",
)
DEFAULT_PORT = 8545
KEEPER_ETH = 1_000  # native ETH given to the keeper
NATIVE_PRICE = "3000"  # USDC per ETH, to cost gas in the keeper's decisions
KEYSTORE_SCRYPT_N = 2**14  # a sandbox-only key: a light scrypt so `keeper run` starts at once
CHAIN_ID = 31337


class SandboxError(Exception):
    """Bad usage or a workdir the sandbox cannot use: one line, exit 2."""


class SandboxDown(Exception):
    """No sandbox answers at the address sandbox.json names: one line, exit 1."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ---- the workdir ---------------------------------------------------------------------------------------


def prepare_workdir(workdir: str | Path, *, resume: bool, reset: bool) -> Path:
    """The sandbox's folder: created (with a marker file) when missing; an empty folder is taken; a folder an
    earlier sandbox made is reused. A saved chain in it is only continued (--resume) or discarded (--reset),
    never silently replaced. Any other non-empty folder is refused. Never deletes a file it did not write."""
    wd = Path(workdir).expanduser().absolute()
    if wd.exists() and not wd.is_dir():
        raise SandboxError(f"--workdir {wd} exists and is not a folder; choose a new or empty folder")
    if wd.is_dir() and any(wd.iterdir()) and not (wd / MARKER).is_file():
        raise SandboxError(
            f"--workdir {wd} is not empty and was not created by `keeper sandbox`; choose a new or empty folder (nothing was changed)"
        )
    saved = (wd / STATE_FILE).is_file()
    if resume:
        if not saved or not (wd / INFO_FILE).is_file():
            raise SandboxError(f"--resume: no saved sandbox in {wd} ({STATE_FILE} and {INFO_FILE}); start one without --resume")
        return wd
    if saved and not reset:
        raise SandboxError(
            f"{wd} holds a saved sandbox chain ({STATE_FILE}): `keeper sandbox --resume` continues it, "
            "`--reset` discards it and starts a new one"
        )
    if wd.is_dir():
        _locked_or_raise(wd)  # never reset the folder of a sandbox that is running
        for name in SANDBOX_FILES:
            f = wd / name
            if f.is_file() or f.is_symlink():
                f.unlink()
    else:
        wd.mkdir(parents=True)
    (wd / MARKER).write_text("Created by `keeper sandbox`, which may reuse this folder and replace its own files in it.\n")
    return wd


def _locked_or_raise(wd: Path) -> None:
    from keeper.statelock import StateLocked, acquire_state_lock  # noqa: PLC0415

    try:
        acquire_state_lock(wd / "sandbox").release()
    except StateLocked as exc:
        raise SandboxError(f"a sandbox is already running in {wd} (pid {exc.pid}); stop it first") from None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as anvil binds: TIME_WAIT leftovers do not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(requested: int | None, previous: int | None) -> int:
    from keeper.devtools.anvil import free_port  # noqa: PLC0415

    if requested is not None:
        if not 0 < requested < 65536:
            raise SandboxError(f"--port {requested} is not a TCP port")
        if not _port_free(requested):
            raise SandboxError(f"--port {requested} is in use on 127.0.0.1; choose another one")
        return requested
    for cand in (previous, DEFAULT_PORT):
        if cand and _port_free(cand):
            return cand
    return free_port()


def _write_private(path: Path, text: str) -> None:
    """Create `path` with mode 600 from the start (never readable by others, not even briefly)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_info(workdir: str | Path) -> dict[str, Any]:
    wd = Path(workdir).expanduser().absolute()
    path = wd / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise SandboxError(
            f"no sandbox in {wd} ({INFO_FILE} not found): start one with `keeper sandbox --workdir {workdir}`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SandboxError(f"{path} is not valid JSON") from None
    if not isinstance(info, dict) or "rpc_url" not in info or "perp" not in info or "llamma" not in info:
        raise SandboxError(f"{path} is not a sandbox description")
    return info


# ---- the keeper's key and config -------------------------------------------------------------------------


def create_keeper_key(wd: Path) -> str:
    """A new random key, encrypted into wd/keeper-keystore.json with a random password in wd/keeper-password
    (both mode 600). Returns the address. The key itself is never printed or written in the clear."""
    from eth_account import Account  # noqa: PLC0415

    acct = Account.create()
    password = secrets.token_urlsafe(24)
    keystore = Account.encrypt(acct.key, password, kdf="scrypt", iterations=KEYSTORE_SCRYPT_N)
    _write_private(wd / PASSWORD_FILE, password + "\n")
    _write_private(wd / KEYSTORE_FILE, json.dumps(keystore))
    return str(acct.address)


def keeper_config(wd: Path, info: dict[str, Any]) -> dict[str, Any]:
    from keeper.devtools.scenario import protocols_config  # noqa: PLC0415

    protocols = protocols_config(info["perp"]["clearing_house"], info["llamma"]["factory"], int(info["start_block"]))
    return {
        "chain": {"rpc_urls": [info["rpc_url"]], "chain_id": CHAIN_ID, "poll_interval": 0.2},
        "key": {
            "keystore": str(wd / KEYSTORE_FILE),
            "password_file": str(wd / PASSWORD_FILE),
            "address": info["keeper"]["address"],
        },
        "pricing": {"source": "fixed", "value": NATIVE_PRICE},
        "profit": {"min_profit": "0.5"},
        "state": {"path": str(wd / KEEPER_STATE)},
        "http": {"listen": f"127.0.0.1:{info['keeper']['http_port']}"},
        "protocols": protocols,
    }


# ---- running it ----------------------------------------------------------------------------------------


@dataclass
class SandboxOptions:
    workdir: str = "sandbox"
    resume: bool = False
    reset: bool = False
    port: int | None = None
    block_time: float = 2.0


def _cmd_prefix(workdir: str) -> str:
    return "keeper sandbox" if workdir == "sandbox" else f"keeper sandbox --workdir {workdir}"


def run_sandbox(opts: SandboxOptions) -> int:
    """Start (or resume) the sandbox and serve it until SIGINT / SIGTERM; 0 after a clean stop and dump."""
    from keeper.devtools.paths import demo_requirements_line  # noqa: PLC0415

    needs = demo_requirements_line()
    if needs is not None:
        print(f"keeper: {needs.replace('keeper demo', 'keeper sandbox').replace('make demo', 'make sandbox')}", file=sys.stderr)
        return 2
    if opts.block_time < 0:
        raise SandboxError(f"--block-time {opts.block_time} must be ≥ 0 (0: blocks only for transactions)")
    wd = prepare_workdir(opts.workdir, resume=opts.resume, reset=opts.reset)
    from keeper.statelock import StateLocked, acquire_state_lock  # noqa: PLC0415

    try:
        lock = acquire_state_lock(wd / "sandbox")
    except StateLocked as exc:
        raise SandboxError(f"a sandbox is already running in {wd} (pid {exc.pid}); stop it first") from None
    with lock:
        return _serve(wd, opts)


class _Stop:
    """SIGINT / SIGTERM: before the sandbox is ready, interrupt the start; after, ask the loop to stop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ready = False
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()
        if not self.ready:
            raise KeyboardInterrupt


def _serve(wd: Path, opts: SandboxOptions) -> int:
    from keeper.devtools.anvil import AnvilProcess  # noqa: PLC0415
    from keeper.devtools.chain import DevChain  # noqa: PLC0415
    from keeper.devtools.configfile import write_config  # noqa: PLC0415
    from keeper.devtools.scenario import WORLD_ACCOUNTS  # noqa: PLC0415

    previous = load_info(wd) if opts.resume else None
    port = choose_port(opts.port, previous["port"] if previous else None)
    stop = _Stop()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    (wd / STATE_TMP).unlink(missing_ok=True)
    node = AnvilProcess(
        port=port,
        # a reloaded chain's clock continues from its last block (docs/PROTOCOLS.md §L: never back in time)
        timestamp=saved_timestamp(wd / STATE_FILE) + 1 if opts.resume else int(time.time()) - 30 * 86400,
        accounts=WORLD_ACCOUNTS,
        load_state=str(wd / STATE_FILE) if opts.resume else None,
        dump_state=str(wd / STATE_TMP),
        log_path=str(wd / "anvil.log"),
    )
    t0 = time.monotonic()
    try:
        node.start(ready_timeout=60)
        if node.port != port:  # AnvilProcess moves to another port if this one was taken meanwhile
            raise SandboxError(f"port {port} was taken while anvil started; choose another --port")
        chain = DevChain(node.url)
        info = _resume(chain, previous) if previous is not None else _build(chain, wd)
        info["rpc_url"], info["port"], info["pid"] = node.url, node.port, os.getpid()
        info["keeper"]["http_port"] = _http_port(info["keeper"].get("http_port"))
        write_config(wd / CONFIG_FILE, keeper_config(wd, info))
        _write_atomic(wd / INFO_FILE, json.dumps(info, indent=2) + "\n")
        _usage(wd, opts, info, chain, time.monotonic() - t0)
        stop.ready = True
        say(f"sandbox: ready rpc={node.url} workdir={wd}")
        code = _heartbeat(chain, node, stop, opts.block_time)
        # still under our handlers: a second Ctrl-C while anvil writes its state changes nothing
        return _shutdown(wd, opts, chain, node, code)
    except KeyboardInterrupt:
        node.stop()
        (wd / STATE_TMP).unlink(missing_ok=True)
        print("keeper sandbox: interrupted before it was ready; nothing saved", file=sys.stderr)
        return 1
    except BaseException:
        node.stop()
        (wd / STATE_TMP).unlink(missing_ok=True)
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)


def _shutdown(wd: Path, opts: SandboxOptions, chain: Any, node: Any, code: int) -> int:
    """Stop anvil (SIGTERM: it writes its --dump-state file), then put the dump in place of the saved chain."""
    head = _safe_head(chain)
    exit_code = node.stop(timeout=60)
    tmp = wd / STATE_TMP
    if not tmp.is_file() or tmp.stat().st_size == 0:
        print(
            f"keeper sandbox: anvil exited ({exit_code}) without writing its state; {wd / STATE_FILE} is unchanged",
            file=sys.stderr,
        )
        return 1
    os.replace(tmp, wd / STATE_FILE)
    where = f" at block {head}" if head is not None else ""
    say(f"sandbox: stopped{where}; chain saved to {wd / STATE_FILE}; `{_cmd_prefix(opts.workdir)} --resume` continues it")
    return code


def _safe_head(chain: Any) -> int | None:
    try:
        return int(chain.block_number())
    except Exception:  # noqa: BLE001 - display only
        return None


def _http_port(previous: int | None) -> int:
    from keeper.devtools.anvil import free_port  # noqa: PLC0415

    return previous if previous and _port_free(previous) else free_port()


def _build(chain: Any, wd: Path) -> dict[str, Any]:
    from keeper.devtools.scenario import BOOK, KEEPER_CRVUSD, build_world, llamma_info, perp_info  # noqa: PLC0415

    keeper = create_keeper_key(wd)
    chain.set_balance(keeper, KEEPER_ETH * E)
    world = build_world(chain, keeper)
    perp = perp_info(world.perp)
    return {
        "version": 1,
        "chain_id": CHAIN_ID,
        "start_block": world.perp.start_block,
        "perp": perp,
        "llamma": llamma_info(world.crv, "ETH"),
        "keeper": {
            "address": keeper,
            "keystore": KEYSTORE_FILE,
            "password_file": PASSWORD_FILE,
            "eth": KEEPER_ETH,
            "crvusd": KEEPER_CRVUSD,
        },
        "accounts": {
            "admin": chain.admin,
            "whale": world.whale,
            "arbitrageur": world.arbitrageur,
            "traders": world.traders,
            "borrowers": world.borrowers,
        },
        "positions": [
            {"market": m, "account": t, "side": "long" if side == 0 else "short", "margin": margin, "leverage": lev}
            for (m, t), (_m, side, margin, lev) in zip(world.book, BOOK, strict=True)
        ],
        "loans": [{"market": "ETH", "account": b} for b in world.borrowers],
    }


def _resume(chain: Any, info: dict[str, Any]) -> dict[str, Any]:
    ch = info["perp"]["clearing_house"]
    if chain.w3.eth.get_code(chain.w3.to_checksum_address(ch)) in (b"", None):
        raise SandboxError(f"the saved chain has no ClearingHouse at {ch}: {STATE_FILE} and {INFO_FILE} do not belong together")
    chain.mine()  # the first block after the reload: stamped just after the saved clock (see saved_timestamp)
    return info


def saved_timestamp(path: Path) -> int:
    """The timestamp of the last block in an anvil state dump. anvil stamps the blocks mined after a reload
    from its start clock (`--timestamp`, else wall time; docs/PROTOCOLS.md §L): starting it at this + 1
    keeps the chain's clock going on from where it stopped, never back in time."""
    try:
        dump = json.loads(path.read_text())
        return int(str(dump["block"]["timestamp"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        raise SandboxError(f"{path} is not an anvil state dump (no block timestamp); `--reset` starts a new sandbox") from None


def _usage(wd: Path, opts: SandboxOptions, info: dict[str, Any], chain: Any, seconds: float) -> None:
    cfg = os.path.relpath(wd / CONFIG_FILE) if not os.path.relpath(wd).startswith("..") else str(wd / CONFIG_FILE)
    sb = _cmd_prefix(opts.workdir)
    perp, crv = info["perp"], info["llamma"]
    head = chain.block_number()
    what = "resumed" if opts.resume else f"started in {seconds:.1f} s"
    say(f"keeper sandbox — anvil {what} on {info['rpc_url']} (chain id {CHAIN_ID}, block {head}), files in {wd}")
    say(f"  Perp v1 ClearingHouse {perp['clearing_house']}: vAMMs " + ", ".join(f"{n} {a}" for n, a in perp["amms"].items()))
    say(
        f"  crvUSD LLAMMA factory {crv['factory']}: "
        + ", ".join(f"{n} controller {m['controller']}" for n, m in crv["markets"].items())
    )
    if not opts.resume:
        say(f"  seeded: {len(info['positions'])} perp positions (2x–10x, ETH 3,000 and BTC 60,000), {len(info['loans'])} loans")
    k = info["keeper"]
    say(
        f"  keeper {k['address']} holds {_balances(chain, info)}; its key is in {KEYSTORE_FILE} with the password in "
        f"{PASSWORD_FILE} (both mode 600), named by {CONFIG_FILE}"
    )
    say("")
    say("In another shell:")
    rows = [
        (f"keeper -c {cfg} run", "the keeper daemon against the sandbox"),
        (f"keeper -c {cfg} scan --risky", "positions and loans that are not healthy"),
        (f"{sb} move ETH -8%", "ETH index/oracle −8 %, vAMM and LLAMMA arbitraged to it"),
        (f"{sb} open perp ETH long 10x 1000", "a 10x long with 1,000 USDC margin (new account)"),
        (f"{sb} open llamma ETH 10 --bands 4 --ltv 95%", "a loan on 10 ETH at 95 % of max_borrowable"),
    ]
    width = max(len(c) for c, _ in rows)
    for c, why in rows:
        say(f"  {c:<{width}}   # {why}")
    say(f"Ctrl-C stops the chain and saves it to {wd / STATE_FILE}; `{sb} --resume` continues it.")
    if opts.block_time:
        say(f"An empty block is mined every {opts.block_time:g} s without transactions; every transaction is mined at once.")


def _balances(chain: Any, info: dict[str, Any]) -> str:
    from keeper.devtools.scenario import attach_llamma  # noqa: PLC0415

    address = info["keeper"]["address"]
    eth = chain.w3.eth.get_balance(address)
    market = next(iter(info["llamma"]["markets"]))
    crvusd = attach_llamma(chain, info["llamma"], market).stablecoin.functions.balanceOf(address).call()
    return f"{Decimal(eth) / E:,.4f} ETH and {Decimal(crvusd) / E:,.2f} crvUSD"


def _heartbeat(chain: Any, node: Any, stop: _Stop, block_time: float) -> int:
    """Until a stop signal: mine an empty block when none was mined for `block_time` seconds. 1 if anvil died."""
    last = chain.block_number()
    while not stop.event.wait(block_time or 1.0):
        if node.proc is None or node.proc.poll() is not None:
            print(f"keeper sandbox: anvil exited unexpectedly; see {node.log_path}", file=sys.stderr)
            return 1
        if not block_time:
            continue
        try:
            now = chain.block_number()
            if now == last:
                chain.mine()
                now += 1
            last = now
        except Exception:  # noqa: BLE001 - a busy node: try again next beat
            continue
    return 0


# ---- move and open (from another shell) -----------------------------------------------------------------


def connect(workdir: str | Path) -> tuple[Any, dict[str, Any]]:
    from keeper.devtools.chain import DevChain  # noqa: PLC0415

    info = load_info(workdir)
    chain = DevChain(info["rpc_url"], timeout=30)
    try:
        code = chain.w3.eth.get_code(chain.w3.to_checksum_address(info["perp"]["clearing_house"]))
    except Exception:  # noqa: BLE001 - connection refused and the like
        raise SandboxDown(
            f"no sandbox answers at {info['rpc_url']}: start it with `keeper sandbox --workdir {workdir} --resume`"
        ) from None
    if not code:
        raise SandboxDown(f"the chain at {info['rpc_url']} is not the sandbox of {workdir} (no ClearingHouse code)")
    return chain, info


def _market_names(info: dict[str, Any]) -> str:
    return f"perp {', '.join(info['perp']['amms'])}; llamma {', '.join(info['llamma']['markets'])}"


def move(
    workdir: str | Path, market: str, pct: Decimal, protocol: str = "all", steps: int | None = None, twap: bool = True
) -> list[Any]:
    """Move `market` in every protocol that lists it (or only `protocol`), as arbitrage would."""
    from keeper.devtools.scenario import attach_llamma, attach_perp, move_market  # noqa: PLC0415

    chain, info = connect(workdir)
    name = market.upper()
    perp_has = name in info["perp"]["amms"] and protocol in ("all", "perp")
    llamma_has = name in info["llamma"]["markets"] and protocol in ("all", "llamma")
    if not (perp_has or llamma_has):
        where = "" if protocol == "all" else f" in {protocol}"
        raise SandboxError(f"MARKET {market!r}: no such market{where}; the sandbox has {_market_names(info)}")
    moves = []
    accounts = info["accounts"]
    if perp_has:
        perp = attach_perp(chain, info["perp"])
        moves.append(move_market(chain, perp, name, pct, accounts["whale"], twap_seconds=900 if twap else 0))
    if llamma_has:
        crv = attach_llamma(chain, info["llamma"], name)
        moves.append(move_market(chain, crv, name, pct, accounts["arbitrageur"], steps=steps))
    return moves


def _new_account(chain: Any, account: str | None) -> str:
    from eth_account import Account  # noqa: PLC0415
    from web3 import Web3  # noqa: PLC0415

    if account is None:
        address = str(Account.create().address)
    else:
        if not Web3.is_address(account):
            raise SandboxError(f"--account {account!r} is not an address")
        address = Web3.to_checksum_address(account)
    chain.rpc("anvil_impersonateAccount", [address])  # send as it without its key (a sandbox-only trader)
    if chain.w3.eth.get_balance(address) < E:
        chain.set_balance(address, 10 * E)
    return address


def _stop_impersonating(chain: Any, address: str) -> None:
    with contextlib.suppress(Exception):
        chain.rpc("anvil_stopImpersonatingAccount", [address])


def _to_wei(value: Decimal, what: str, decimals: int = 18) -> int:
    scaled_value = value * (Decimal(10) ** decimals)
    if scaled_value != scaled_value.to_integral_value():
        raise SandboxError(f"{what} {value} has more than {decimals} decimals")
    return int(scaled_value) * 10 ** (18 - decimals)


def open_perp(
    workdir: str | Path, market: str, side: str, leverage: Decimal, margin: Decimal, account: str | None = None
) -> dict[str, Any]:
    """Open (or add to) a position of `account` (default: a new account) with `margin` USDC at `leverage`."""
    from keeper.devtools.perp_env import BUY, SELL, USDC_DECIMALS  # noqa: PLC0415
    from keeper.devtools.scenario import attach_perp  # noqa: PLC0415

    sides = {"long": BUY, "buy": BUY, "short": SELL, "sell": SELL}
    if side.lower() not in sides:
        raise SandboxError(f"SIDE {side!r}: expected long or short")
    if leverage <= 0:
        raise SandboxError(f"LEVERAGE {leverage}: must be > 0 (e.g. 10x)")
    if margin <= 0:
        raise SandboxError(f"MARGIN {margin}: must be > 0 (USDC)")
    lev_w = _to_wei(leverage, "LEVERAGE")
    margin_w = _to_wei(margin, "MARGIN (USDC)", USDC_DECIMALS)
    chain, info = connect(workdir)
    name = market.upper()
    if name not in info["perp"]["amms"]:
        raise SandboxError(f"MARKET {market!r}: the sandbox's perp markets are {', '.join(info['perp']['amms'])}")
    perp = attach_perp(chain, info["perp"])
    imr = perp.clearing_house.functions.initMarginRatio().call()
    if imr and lev_w * imr > E * E:
        raise SandboxError(f"LEVERAGE {leverage}x is above the maximum {Decimal(E) / Decimal(imr):g}x (initial margin ratio)")
    address = _new_account(chain, account)
    try:
        perp.fund_trader(address, margin_w + E)  # USDC minted by the admin, approved for the ClearingHouse
        perp.open_position(address, name, sides[side.lower()], margin_w, lev_w)
        pos = perp.position(name, address)
        ratio = perp.margin_ratio(name, address)
    finally:
        if account is None:
            _stop_impersonating(chain, address)
    return {
        "protocol": "perp",
        "market": name,
        "account": address,
        "side": "long" if sides[side.lower()] == BUY else "short",
        "leverage": str(leverage),
        "margin": str(margin),
        "size": pos["size"],
        "position_margin": pos["margin"],
        "open_notional": pos["open_notional"],
        "margin_ratio": ratio,
        "block": chain.block_number(),
    }


def open_llamma(
    workdir: str | Path,
    market: str,
    collateral: Decimal,
    bands: int = 10,
    ltv: Decimal | None = None,
    debt: Decimal | None = None,
    account: str | None = None,
) -> dict[str, Any]:
    """A loan of `account` (default: a new account) on `collateral` tokens over `bands` bands, borrowing `debt`
    crvUSD or `ltv` percent of max_borrowable (default 90 %)."""
    from keeper.devtools.scenario import attach_llamma  # noqa: PLC0415

    if collateral <= 0:
        raise SandboxError(f"COLLATERAL {collateral}: must be > 0")
    if not 4 <= bands <= 50:
        raise SandboxError(f"--bands {bands}: must be between 4 and 50")
    if ltv is not None and debt is not None:
        raise SandboxError("--ltv and --debt: give one of them")
    if ltv is not None and not 0 < ltv <= 100:
        raise SandboxError(f"--ltv {ltv}%: must be more than 0 and at most 100 %")
    if debt is not None and debt <= 0:
        raise SandboxError(f"--debt {debt}: must be > 0")
    chain, info = connect(workdir)
    name = market.upper()
    if name not in info["llamma"]["markets"]:
        raise SandboxError(f"MARKET {market!r}: the sandbox's llamma markets are {', '.join(info['llamma']['markets'])}")
    crv = attach_llamma(chain, info["llamma"], name)
    col = _to_wei(collateral, "COLLATERAL", crv.collateral_decimals) // 10 ** (18 - crv.collateral_decimals)
    max_debt = crv.max_borrowable(col, bands)
    if debt is not None:
        amount = _to_wei(debt, "--debt", crv.borrowed_decimals) // 10 ** (18 - crv.borrowed_decimals)
        if amount > max_debt:
            raise SandboxError(
                f"--debt {debt} is above max_borrowable {Decimal(max_debt) / 10**crv.borrowed_decimals:f} "
                f"for {collateral} collateral over {bands} bands"
            )
    else:
        amount = int(Decimal(max_debt) * (ltv if ltv is not None else Decimal(90)) / 100)
    if amount <= 0:
        raise SandboxError("the loan's debt rounds to 0: give more collateral")
    address = _new_account(chain, account)
    try:
        if crv.controller.functions.loan_exists(address).call():
            raise SandboxError(f"--account {address} already has a loan in llamma {name}")
        crv.create_loan(address, col, amount, bands)
        n1, n2 = crv.user_bands(address)
        health = crv.health(address, True)
    finally:
        if account is None:
            _stop_impersonating(chain, address)
    return {
        "protocol": "llamma",
        "market": name,
        "account": address,
        "collateral": col,
        "debt": amount,
        "max_borrowable": max_debt,
        "bands": [n1, n2],
        "health": health,
        "block": chain.block_number(),
    }
