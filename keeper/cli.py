"""`keeper` command line.

    keeper [-c CONFIG] run [--dry-run]      the daemon: per new block index, refresh, evaluate, liquidate
    keeper [-c CONFIG] run --monitor-only   no key: evaluate, alert, metrics (watchlist, monitors), never send
    keeper [-c CONFIG] scan [--json] [--risky] [--adl] [--block N]  one-shot table of every indexed position (+ ADL ranking)
    keeper [-c CONFIG] check                config, connectivity, chain id, key, code at every address
    keeper [-c CONFIG] whatif --shock ETH=-10% [--steps -1%..-30%]  what a price move makes liquidatable; the map
    keeper [-c CONFIG] liquidator deploy|status|sweep  the keeper's LLAMMA liquidator contract (callback mode)
    keeper demo                             local anvil + reference protocols + crash + the real daemon
    keeper config-help                      every setting with its default and help

Exit codes: 0 ok; 1 a startup check or runtime failure (message on stderr); 2 invalid
configuration or usage (the offending field is named); no traceback for user errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from decimal import Decimal
from typing import Any

import keeper.adapters  # noqa: F401 - registers the protocol kinds with keeper.config
from keeper import __version__
from keeper.commands import command_modules, err, print_table
from keeper.config import ConfigError, KeeperConfig, iter_help, iter_protocol_help, load_config
from keeper.keys import KeyLoadError
from keeper.log import configure_logging, get_logger
from keeper.units import decimal_text, fmt_ratio, fmt_units

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keeper", description="Liquidation keeper for Perp v1 and LLAMMA markets.")
    p.add_argument("--version", action="version", version=f"keeper {__version__}")
    p.add_argument(
        "-c", "--config", default=os.environ.get("KEEPER_CONFIG", "keeper.toml"), help="TOML config (env KEEPER_CONFIG)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--dry-run", action="store_true", help="evaluate and simulate, never send")
    run.add_argument(
        "--monitor-only",
        action="store_true",
        help="no key needed: evaluate, alert and export metrics (watchlist, monitors); never confirm, simulate or send",
    )
    scan = sub.add_parser(
        "scan",
        help="one-shot table of positions",
        description="Every indexed position, what `run` would do with it now, and its risk usage (maintenance "
        "requirement ÷ what it has; 100 % = liquidatable). Perp LIQ PRICE / FULL LIQ PRICE: the index price at which "
        "it becomes liquidatable / fully liquidated, assuming a sustained move (the vAMM traded to that price and "
        "held for the 900 s TWAP, funding as of now), exact to one quote-token unit.",
    )
    scan.add_argument("--json", action="store_true", help="JSON output")
    scan.add_argument("--risky", action="store_true", help="only positions that are not healthy")
    scan.add_argument("--adl", action="store_true", help="add the ADL ranking of perp positions (a monitor: Perp v1 has no ADL)")
    scan.add_argument(
        "--block",
        type=int,
        default=None,
        metavar="N",
        help="as of past block N (archive node or anvil): every read tagged at N, events indexed up to N, N's base fee",
    )
    sub.add_parser("check", help="check config, RPC, chain id, key and contract code")
    demo = sub.add_parser("demo", help="local end-to-end demo on an embedded anvil chain")
    demo.add_argument(
        "--workdir",
        default="demo-run",
        help="folder for the demo's config, state and logs: a new or empty folder, or one an earlier demo made (anything else is refused, never deleted)",
    )
    sub.add_parser("config-help", help="list every setting with default and help")
    for mod in command_modules():
        mod.add_arguments(sub.add_parser(mod.NAME, help=mod.HELP))
    return p


def _config_help() -> None:
    """Every setting: dotted name, type, default, help; then the [[protocols]] fields of each kind."""

    def table(rows: list[tuple[str, str, str, str]]) -> None:
        for name, typ, default, help_ in rows:
            print(f"  {name:44s} {typ:44s} {default:20s} {help_}".rstrip())

    print("Settings (TOML; any can be overridden by KEEPER__SECTION__FIELD=value). NAME  TYPE  DEFAULT  MEANING\n")
    table(list(iter_help()))
    for kind, rows in iter_protocol_help():
        print(f'\n[[protocols]] kind = "{kind}" (one table per deployment; at least one enabled)\n')
        table(rows)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    extra = {mod.NAME: mod for mod in command_modules()}
    if args.command in extra:
        return int(extra[args.command].run(args))
    if args.command == "config-help":
        _config_help()
        return EXIT_OK
    if args.command == "demo":
        from keeper.devtools.paths import demo_requirements_line  # noqa: PLC0415 - dev tools only here

        needs = demo_requirements_line()  # e.g. from an installed wheel: no anvil, no contract sources
        if needs is not None:
            err(needs)
            return EXIT_CONFIG
        from keeper.devtools.demo import run_demo  # noqa: PLC0415

        return run_demo(args.workdir)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        err(f"invalid config: {exc}")
        return EXIT_CONFIG
    configure_logging(cfg.log.level, cfg.log.format)
    try:
        if args.command == "run":
            return asyncio.run(_run(cfg, args.dry_run, args.monitor_only))
        if args.command == "scan":
            if args.block is not None and args.block < 0:
                err(f"--block: must be a block number ≥ 0, got {args.block}")
                return EXIT_CONFIG
            return asyncio.run(_scan(cfg, args.json, args.risky, args.adl, args.block))
        if args.command == "check":
            return asyncio.run(_check(cfg))
    except KeyLoadError as exc:
        err(f"invalid key configuration: {exc}")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_CONFIG  # pragma: no cover


async def _run(cfg: KeeperConfig, dry_run: bool, monitor_only: bool = False) -> int:
    from keeper.daemon import Daemon, StartupError  # noqa: PLC0415 - heavy imports only for the commands that need them
    from keeper.statelock import StateLocked  # noqa: PLC0415

    try:
        daemon = await Daemon.open(cfg, dry_run=dry_run, monitor_only=monitor_only, log=get_logger())
    except StartupError as exc:
        err(f"startup check failed: {exc}")
        return EXIT_FAILURE
    except StateLocked as exc:
        err(f"state.path: {exc}")
        return EXIT_CONFIG
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if cfg.http.listen:
        from keeper.service import start_http  # noqa: PLC0415

        try:
            runner = await start_http(daemon, cfg.http.listen)
        except OSError as exc:
            await daemon.close()
            err(f"startup check failed: cannot listen on http.listen = {cfg.http.listen}: {exc}")
            return EXIT_FAILURE
    task = asyncio.create_task(daemon.run(stop))
    await stop.wait()
    daemon.log.info("shutdown_requested")
    try:
        await asyncio.wait_for(task, timeout=cfg.shutdown_timeout)
    except TimeoutError:
        daemon.log.warning("shutdown_timeout", seconds=cfg.shutdown_timeout, note="in-flight block abandoned; journal is durable")
    if runner is not None:
        await runner.cleanup()
    daemon.log.info("keeper_stopped", dry_run=daemon.dry_run, monitor_only=daemon.monitor_only, **daemon.store.summary())
    await daemon.close()
    return EXIT_OK


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return fmt_ratio(value, 3)
    if kind == "amount":
        return fmt_units(value, 18, 4)
    if kind == "bool":
        return "yes" if value else "no"
    return str(value)


def _short(addr: str) -> str:
    return addr[:6] + "…" + addr[-4:]


def _json_value(v: Any, kind: str | None) -> Any:
    """Exact JSON: 1e18 amounts and ratios as decimal strings in token units ("1234.5", "0.0625")."""
    if kind in ("ratio", "amount") and isinstance(v, int) and not isinstance(v, bool):
        return decimal_text(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    return v


SCAN_AMOUNTS = {
    "est_reward": "amount",
    "est_cost": "amount",
    "est_profit": "amount",
    "min_profit": "amount",
    "risk_usage": "ratio",  # maintenance requirement ÷ what the position has, 1e18 = 100 % = liquidatable
    "l1_fee": "amount",  # an L2's L1 data fee, inside est_cost (rows where it is non-zero)
}


async def _scan(cfg: KeeperConfig, as_json: bool, risky: bool, adl: bool = False, block: int | None = None) -> int:
    from keeper.daemon import BlockOutOfRange, ReadOnlyKeeper, StartupError  # noqa: PLC0415

    try:
        keeper = await ReadOnlyKeeper.open(cfg, log=get_logger(), block=block)
    except BlockOutOfRange as exc:
        err(f"--block: {exc}")
        return EXIT_CONFIG
    except StartupError as exc:
        err(f"startup check failed: {exc}")
        return EXIT_FAILURE
    try:
        rows = await keeper.scan()
    finally:
        await keeper.close()
    head = keeper.head
    ranked: list[Any] = []
    adl_units: dict[str, str] = {}
    if adl:
        from keeper.monitors.insurance import ADL_UNITS, add_adl_fields  # noqa: PLC0415 - docs/PROTOCOLS.md §I

        ranked, adl_units = add_adl_fields(keeper.adapters, rows), ADL_UNITS
    if risky:
        rows = [r for r in rows if r["status"] != "healthy"]
    kinds: dict[str, dict[str, str]] = {}
    columns: dict[str, list[tuple[str, str, str]]] = {}
    for a in keeper.adapters:
        columns[a.name] = a.scan_columns()
        kinds[a.name] = a.field_units() | {f: k for _, f, k in columns[a.name]} | SCAN_AMOUNTS | adl_units
    if as_json:
        out = [{k: _json_value(v, kinds.get(r["protocol"], {}).get(k)) for k, v in r.items()} for r in rows]
        print(json.dumps({"block": head.number, "keeper": keeper.keeper_address, "positions": out}, indent=1))
        return EXIT_OK
    print(f"block {head.number}: {len(rows)} positions, as keeper {keeper.keeper_address}")
    for a in keeper.adapters:
        prow = [r for r in rows if r["protocol"] == a.name]
        if not prow:
            continue
        extra = columns[a.name]
        l1_col = any(r.get("l1_fee") for r in prow)  # on an L2: the L1 data fee inside EST COST
        headers = [
            "MARKET",
            "ACCOUNT",
            "RISK USAGE",
            *[h for h, _, _ in extra],
            "STATUS",
            "ACTION",
            "EST REWARD",
            "EST COST",
            *(["L1 FEE"] if l1_col else []),
            "EST PROFIT",
            "MIN PROFIT",
        ]
        table = [headers]
        for r in prow:
            table.append(
                [
                    r["market"],
                    _short(r["account"]),
                    _fmt(r.get("risk_usage"), "ratio"),
                    *[_fmt(r.get(f), k) for _, f, k in extra],
                    r["status"],
                    r["action"] or "-",
                    _fmt(r["est_reward"], "amount"),
                    _fmt(r["est_cost"], "amount"),
                    *([_fmt(r.get("l1_fee"), "amount")] if l1_col else []),
                    _fmt(r["est_profit"], "amount"),
                    _fmt(r["min_profit"], "amount"),
                ]
            )
        print(f"\n[{a.name}] ({a.kind}, values in {a.value_symbol}; closest to liquidation first)")
        print_table([[str(c) for c in row] for row in table])
        notes = [r for r in prow if r["status"] not in ("healthy", "partial", "full") and r.get("reason")]
        for r in notes:
            print(f"  {_short(r['account'])}: {r['status']}: {r['reason']}")
    if adl:
        from keeper.monitors.insurance import adl_table  # noqa: PLC0415

        print("\n".join(adl_table(ranked)))
    return EXIT_OK


async def _check(cfg: KeeperConfig) -> int:
    from keeper.daemon import run_checks  # noqa: PLC0415

    rows = await run_checks(cfg, log=get_logger())
    ok = all(r[1] for r in rows)
    for name, good, detail in rows:
        print(f"{'ok ' if good else 'FAIL'}  {name:40s} {detail}")
    print("all checks passed" if ok else "some checks failed")
    if ok:
        return EXIT_OK
    err("check failed: " + "; ".join(f"{name}: {detail}" for name, good, detail in rows if not good))
    key_ok = next((good for name, good, _ in rows if name == "key"), True)
    return EXIT_FAILURE if key_ok else EXIT_CONFIG  # a key that cannot be loaded is a configuration error


if __name__ == "__main__":
    raise SystemExit(main())
