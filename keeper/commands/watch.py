"""`keeper watch`: a one-shot table of the watched positions ([watch], README "Watchlist") with their risk
usage (100 % = the liquidation threshold), status and the levels / LLAMMA events they are past now.

Needs no key: it is built like `keeper scan` (read-only keeper, in-memory copy of the state, no Sender)
and reads as `key.address` or the zero address; nothing can be signed or sent.
"""

from __future__ import annotations

import argparse
from typing import Any

from keeper.commands import err, load_config_or_report
from keeper.units import decimal_text

NAME = "watch"
HELP = "one-shot table of the watched positions' risk usage and alerts (no key needed)"

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON output (exact decimal strings)")
    parser.add_argument(
        "--account", action="append", default=[], metavar="ADDRESS", help="watch this account instead of [watch] accounts"
    )
    parser.add_argument("--all", action="store_true", help="every indexed position instead of [watch] accounts")


def run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - heavy imports only when the command runs

    import keeper.adapters  # noqa: F401, PLC0415 - registers the protocol kinds
    from keeper.config import _address  # noqa: PLC0415
    from keeper.log import configure_logging  # noqa: PLC0415

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    accounts: list[str] | str | None = None
    if args.all:
        accounts = "all"
    elif args.account:
        try:
            accounts = [_address(a) for a in args.account]
        except ValueError as exc:
            err(f"--account: {exc}")
            return EXIT_CONFIG
    if accounts is not None:
        cfg = cfg.model_copy(update={"watch": cfg.watch.model_copy(update={"accounts": accounts, "enabled": True})})
    if not cfg.watch.enabled or not cfg.watch.accounts:
        err('watch.accounts: nothing to watch (set [watch] accounts = [...] or "all", or pass --account / --all)')
        return EXIT_CONFIG
    configure_logging(cfg.log.level, cfg.log.format)
    try:
        return asyncio.run(_watch(cfg, args.json))
    except KeyboardInterrupt:
        return EXIT_OK


async def _watch(cfg: Any, as_json: bool) -> int:
    from keeper.daemon import ReadOnlyKeeper, StartupError, monitor_address  # noqa: PLC0415
    from keeper.log import get_logger  # noqa: PLC0415
    from keeper.monitors.watch import WatchMonitor, WatchRow  # noqa: PLC0415
    from keeper.rpc import RpcError, RpcUnavailable  # noqa: PLC0415

    log = get_logger()
    try:
        keeper = await ReadOnlyKeeper.open(cfg, log=log, address=monitor_address(cfg))
    except StartupError as exc:
        err(f"startup check failed: {exc}")
        return EXIT_FAILURE
    monitor = WatchMonitor(cfg.watch, alerts=None, metrics=None, log=log)
    rows: list[WatchRow] = []
    try:
        head = keeper.head
        for a in keeper.adapters:
            await a.sync(head)
            keys = [e.key for e in a.evaluate(head) if monitor.watches(e.key.account)]
            rows += [monitor.assess(a, e) for e in await a.evaluate_positions(keys, head)]
    except (RpcError, RpcUnavailable) as exc:
        err(f"RPC failed: {exc}")
        return EXIT_FAILURE
    finally:
        await keeper.close()
    rows.sort(key=lambda r: -1 if r.usage is None else r.usage, reverse=True)
    missing = sorted(set(monitor.accounts or ()) - {r.account for r in rows})
    if as_json:
        _print_json(cfg, head.number, rows, missing)
    else:
        _print_table(cfg, head.number, rows, missing)
    return EXIT_OK


def _dec(v: int | None) -> str | None:
    """A 1e18 value as an exact decimal string ("0.853", "-0.02")."""
    return None if v is None else decimal_text(v)


def _alerts(row: Any) -> list[str]:
    """The active alerts of a row, as short texts."""
    from keeper.units import fmt_ratio  # noqa: PLC0415

    out = []
    for check, levels in row.active.items():
        if check == "risk_usage":
            out.append("usage ≥ " + ", ".join(fmt_ratio(lv, 0) for lv in levels))
        elif check == "soft_liquidation":
            out.append("soft liquidation")
        elif check == "converted_share":
            out.append(f"converted ≥ {fmt_ratio(levels[0], 0)}")
        else:
            out.append(f"health ≤ {fmt_ratio(-levels[0], 0)}")
    return out


def _print_json(cfg: Any, block: int, rows: list[Any], missing: list[str]) -> None:
    import json  # noqa: PLC0415

    from keeper.units import to_units  # noqa: PLC0415

    out = []
    for r in rows:
        out.append(
            {
                "protocol": r.protocol,
                "kind": r.kind,
                "market": r.market,
                "market_address": r.market_address,
                "account": r.account,
                "status": r.status,
                "risk_usage": _dec(r.usage),
                "thresholds_crossed": [_dec(lv) for lv in r.active.get("risk_usage", [])],
                "alerts": sorted(r.active),
                "health": _dec(r.health),
                "soft_liquidation": r.soft,
                "converted": _dec(r.converted),
            }
        )
    doc = {
        "block": block,
        "thresholds": [_dec(to_units(t, 18)) for t in cfg.watch.thresholds],
        "hysteresis": _dec(to_units(cfg.watch.hysteresis, 18)),
        "positions": out,
        "accounts_without_positions": missing,
    }
    print(json.dumps(doc, indent=1))


def _print_table(cfg: Any, block: int, rows: list[Any], missing: list[str]) -> None:
    from keeper.units import fmt_ratio, to_units  # noqa: PLC0415

    levels = ", ".join(fmt_ratio(to_units(t, 18), 0) for t in cfg.watch.thresholds) or "none"
    print(f"block {block}: {len(rows)} watched positions (risk usage 100 % = liquidation threshold; alert levels {levels})")
    table = [["PROTOCOL", "MARKET", "ACCOUNT", "RISK USAGE", "STATUS", "HEALTH", "SOFT", "CONVERTED", "ALERTS"]]
    for r in rows:
        table.append(
            [
                r.protocol,
                r.market,
                r.account,
                fmt_ratio(r.usage, 2),
                r.status,
                fmt_ratio(r.health, 2),
                "-" if r.soft is None else ("yes" if r.soft else "no"),
                fmt_ratio(r.converted, 2),
                "; ".join(_alerts(r)) or "-",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for account in missing:
        print(f"{account}: no open position")
