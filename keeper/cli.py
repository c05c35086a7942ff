"""`keeper` command line.

    keeper [-c CONFIG] run [--dry-run]      the daemon: per new block index, refresh, evaluate, liquidate
    keeper [-c CONFIG] scan [--json] [--risky]  one-shot table of every indexed position
    keeper [-c CONFIG] check                config, connectivity, chain id, key, code at every address
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
import sys
from decimal import Decimal
from typing import Any

from keeper import __version__
from keeper.config import ConfigError, KeeperConfig, iter_help, load_config
from keeper.keys import KeyLoadError
from keeper.log import configure_logging, get_logger
from keeper.units import fmt_ratio, fmt_units, from_units

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keeper", description="Liquidation keeper for Perp v1 and LLAMMA markets.")
    p.add_argument("--version", action="version", version=f"keeper {__version__}")
    p.add_argument("-c", "--config", default=os.environ.get("KEEPER_CONFIG", "keeper.toml"), help="TOML config (env KEEPER_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--dry-run", action="store_true", help="evaluate and simulate, never send")
    scan = sub.add_parser("scan", help="one-shot table of positions")
    scan.add_argument("--json", action="store_true", help="JSON output")
    scan.add_argument("--risky", action="store_true", help="only positions that are not healthy")
    sub.add_parser("check", help="check config, RPC, chain id, key and contract code")
    demo = sub.add_parser("demo", help="local end-to-end demo on an embedded anvil chain")
    demo.add_argument("--workdir", default="demo-run", help="folder for the demo's config, state and logs")
    sub.add_parser("config-help", help="list every setting with default and help")
    return p


def _err(msg: str) -> None:
    print(f"keeper: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-help":
        for name, typ, default, help_ in iter_help():
            print(f"{name:36s} {str(typ):28s} default={default!s:16s} {help_}")
        return EXIT_OK
    if args.command == "demo":
        from keeper.devtools.demo import run_demo  # noqa: PLC0415 - dev dependency (vyper) only here

        return run_demo(args.workdir)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _err(f"invalid config: {exc}")
        return EXIT_CONFIG
    configure_logging(cfg.log.level, cfg.log.format)
    try:
        if args.command == "run":
            return asyncio.run(_run(cfg, args.dry_run))
        if args.command == "scan":
            return asyncio.run(_scan(cfg, args.json, args.risky))
        if args.command == "check":
            return asyncio.run(_check(cfg))
    except KeyLoadError as exc:
        _err(f"invalid key configuration: {exc}")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_CONFIG  # pragma: no cover


async def _open(cfg: KeeperConfig, *, with_signer: bool, dry_run: bool = False):
    from keeper.engine import Engine, StartupError  # noqa: PLC0415

    engine = Engine(cfg, dry_run=dry_run, log=get_logger())
    try:
        head = await engine.open(with_signer=with_signer)
    except StartupError as exc:
        await engine.close()
        _err(f"startup check failed: {exc}")
        return None, None
    except KeyLoadError:
        await engine.close()
        raise
    return engine, head


async def _run(cfg: KeeperConfig, dry_run: bool) -> int:
    engine, _head = await _open(cfg, with_signer=True, dry_run=dry_run)
    if engine is None:
        return EXIT_FAILURE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if cfg.http.listen:
        from keeper.service import start_http  # noqa: PLC0415

        try:
            runner = await start_http(engine, cfg.http.listen)
        except OSError as exc:
            await engine.close()
            _err(f"startup check failed: cannot listen on http.listen = {cfg.http.listen}: {exc}")
            return EXIT_FAILURE
    task = asyncio.create_task(engine.run(stop))
    await stop.wait()
    engine.log.info("shutdown_requested")
    try:
        await asyncio.wait_for(task, timeout=cfg.shutdown_timeout)
    except TimeoutError:
        engine.log.warning("shutdown_timeout", seconds=cfg.shutdown_timeout, note="in-flight block abandoned; journal is durable")
    if runner is not None:
        await runner.cleanup()
    engine.log.info("keeper_stopped", **engine.store.summary())
    await engine.close()
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
    if kind in ("ratio", "amount") and isinstance(v, int):
        return str(from_units(v).normalize()) if v else "0"
    if isinstance(v, Decimal):
        return str(v)
    return v


async def _scan(cfg: KeeperConfig, as_json: bool, risky: bool) -> int:
    engine, head = await _open(cfg, with_signer=False)
    if engine is None:
        return EXIT_FAILURE
    try:
        rows = await engine.scan(head)
    finally:
        await engine.close()
    if risky:
        rows = [r for r in rows if r["status"] != "healthy"]
    kinds: dict[str, dict[str, str]] = {}
    columns: dict[str, list[tuple[str, str, str]]] = {}
    for a in engine.adapters:
        columns[a.name] = a.scan_columns()
        kinds[a.name] = {f: k for _, f, k in columns[a.name]} | {"est_reward": "amount", "est_cost": "amount", "est_profit": "amount"}
    if as_json:
        out = [{k: _json_value(v, kinds.get(r["protocol"], {}).get(k)) for k, v in r.items()} for r in rows]
        print(json.dumps({"block": head.number, "positions": out}, indent=1))
        return EXIT_OK
    print(f"block {head.number}: {len(rows)} positions")
    for a in engine.adapters:
        prow = [r for r in rows if r["protocol"] == a.name]
        if not prow:
            continue
        extra = columns[a.name]
        headers = ["MARKET", "ACCOUNT", *[h for h, _, _ in extra], "STATUS", "EST REWARD", "EST COST", "EST PROFIT"]
        table = [headers]
        for r in prow:
            table.append(
                [r["market"], _short(r["account"]), *[_fmt(r.get(f), k) for _, f, k in extra], r["status"],
                 _fmt(r["est_reward"], "amount"), _fmt(r["est_cost"], "amount"), _fmt(r["est_profit"], "amount")]
            )  # fmt: skip
        widths = [max(len(str(row[i])) for row in table) for i in range(len(headers))]
        print(f"\n[{a.name}] ({a.kind}, values in {a.value_symbol})")
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


async def _check(cfg: KeeperConfig) -> int:
    with_signer = True
    engine, _head = await _open(cfg, with_signer=with_signer)
    if engine is None:
        return EXIT_FAILURE
    try:
        rows = await engine.checks()
    finally:
        await engine.close()
    ok = all(r[1] for r in rows)
    for name, good, detail in rows:
        print(f"{'ok ' if good else 'FAIL'}  {name:40s} {detail}")
    print("all checks passed" if ok else "some checks failed")
    return EXIT_OK if ok else EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
