"""`keeper backtest --from A --to B [--sweep min_profit=0,1,5] [--sweep tip=0.5,1] [--out DIR]`: replay a
block range with the daemon's own adapters and policy, list every liquidation opportunity, who took it,
and what this config (and each sweep setting) would have earned. The logic and the model live in
keeper/backtest.py; this module parses, prints and writes the files.

Read-only by construction: built on `ReadOnlyKeeper` (the keeper's address, no Sender), an in-memory index;
the only file it writes is its own output and cache in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keeper.commands import err, load_config_or_report, print_table

NAME = "backtest"
HELP = "replay a block range: liquidation opportunities, who took them, what this config would have earned"
DEFAULT_OUT = "backtest-out"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", type=int, required=True, metavar="A", help="first block of the range")
    p.add_argument("--to", dest="end", type=int, required=True, metavar="B", help="last block of the range (≤ the head)")
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="min_profit=… (value-token units) or tip=… (gwei); several --sweep: every combination",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the CSV files, charts and the cache (default {DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from keeper.backtest import parse_sweeps  # noqa: PLC0415 - heavy imports only when the command runs
    from keeper.keys import KeyLoadError  # noqa: PLC0415
    from keeper.log import configure_logging  # noqa: PLC0415

    if args.start < 0:
        err(f"--from: must be a block number ≥ 0, got {args.start}")
        return EXIT_USAGE
    if args.end < args.start:
        err(f"--to: must be ≥ --from ({args.start}), got {args.end}")
        return EXIT_USAGE
    try:
        settings = parse_sweeps(args.sweep)
    except ValueError as exc:
        err(str(exc))
        return EXIT_USAGE
    cfg = load_config_or_report(args.config)
    if cfg is None:
        return EXIT_USAGE
    configure_logging(cfg.log.level, cfg.log.format)
    try:
        return asyncio.run(_backtest(cfg, args, settings))
    except KeyLoadError as exc:
        err(f"invalid key configuration: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err("interrupted: the replayed blocks are cached; run the same command again to resume")
        return EXIT_FAILURE


async def _backtest(cfg: Any, args: argparse.Namespace, settings: list[Any]) -> int:
    from keeper import backtest as bt  # noqa: PLC0415
    from keeper.daemon import ReadOnlyKeeper, StartupError, keeper_address, rpc_client  # noqa: PLC0415
    from keeper.log import get_logger  # noqa: PLC0415
    from keeper.metrics import Metrics  # noqa: PLC0415
    from keeper.rpc import RpcError, RpcUnavailable  # noqa: PLC0415

    log = get_logger()
    address = keeper_address(cfg)
    rpc = rpc_client(cfg, Metrics())
    try:
        await rpc.start()
        chain_id = await rpc.chain_id()
        head = await rpc.block_number()
    except (RpcUnavailable, RpcError) as exc:
        err(f"startup check failed: RPC unreachable: {exc}")
        return EXIT_FAILURE
    finally:
        await rpc.close()
    if chain_id != cfg.chain.chain_id:
        err(f"startup check failed: chain id mismatch: the RPC serves chain {chain_id}, config says {cfg.chain.chain_id}")
        return EXIT_FAILURE
    if args.end > head:
        err(f"--to: block {args.end} is beyond the chain head {head}")
        return EXIT_USAGE
    out = Path(args.out)
    cache = bt.Cache(out / bt.CACHE_FILE, f"{chain_id}:{bt.config_hash(cfg, address)}")

    labels: dict[str, str] = {}  # market address → its label ("ETH"), when the replay opened a keeper

    async def keeper_open(block: int) -> ReadOnlyKeeper:
        k = await ReadOnlyKeeper.open(cfg, log=log, address=address, block=block)
        labels.update({m: a.market_label(m) for a in k.adapters for m in a.markets()})
        return k

    t0 = time.monotonic()
    try:
        records, events, replayed = await bt.replay(keeper_open, cache, args.start, args.end, progress=not args.no_progress)
    except StartupError as exc:
        err(f"startup check failed: {exc}")
        return EXIT_FAILURE
    finally:
        cache.close()
    replay_s = time.monotonic() - t0
    opps = bt.opportunities(records, events, args.start, args.end)
    own = bt.Setting(None, None)
    rows = bt.sweep(opps, cfg, settings)
    blocks = args.end - args.start + 1
    print(
        f"backtest blocks {args.start}..{args.end} ({blocks} blocks, chain {chain_id}) as keeper {address}: "
        f"{len(opps)} opportunities, {len(events)} liquidations on chain; "
        f"replayed {replayed} blocks in {replay_s:.1f}s ({blocks - replayed} from the cache)"
    )
    policy = bt.policy_for(cfg, own)
    verdicts = [bt.judge(o, cfg, policy, own) for o in opps]
    _print_opportunities(opps, verdicts, address, labels)
    _print_sweep(rows)
    paths = _write_files(out, opps, verdicts, rows, address)
    for p in paths:
        print(f"wrote {p}")
    return EXIT_OK


def _amt(v: int | None) -> str:
    from keeper.units import fmt_units  # noqa: PLC0415

    return "-" if v is None else fmt_units(v, 18, 4)


def _exact(v: int | None) -> str:
    from keeper.units import decimal_text  # noqa: PLC0415

    return "" if v is None else decimal_text(v)


def _who(liquidator: str, keeper: str) -> str:
    if not liquidator:
        return "-"
    return "keeper" if liquidator == keeper else liquidator[:6] + "…" + liquidator[-4:]


def _print_opportunities(opps: list[Any], verdicts: list[Any], keeper: str, labels: dict[str, str]) -> None:
    print("\nOPPORTUNITIES (this config; values in the protocols' value tokens)")
    rows = [["ACCOUNT", "MARKET", "FIRST", "KIND", "REWARD", "GAS", "COST", "PROFIT", "LIQUIDATED", "BY", "GWEI", "AVAIL", "WE"]]
    for o, v in zip(opps, verdicts, strict=True):
        k = o.position
        rows.append(
            [
                k.account[:6] + "…" + k.account[-4:],
                f"{k.protocol}/{labels[k.market]}" if k.market in labels else k.market[:6] + "…" + k.market[-4:],
                str(o.first_block) if o.first_block is not None else "-",
                o.kind + (f"#{o.repeat}" if o.repeat else ""),
                _amt(o.reward),
                str(o.gas) if o.gas is not None else "-",
                _amt(v.cost),
                _amt(v.profit),
                str(o.liquidated_block) if o.liquidated_block is not None else o.ended,
                _who(o.liquidator, keeper),
                f"{o.effective_gas_price / 1e9:.3f}" if o.effective_gas_price is not None else "-",
                str(o.blocks_available),
                "take" if v.taken else v.reason,
            ]
        )
    print_table(rows)


def _print_sweep(rows: list[Any]) -> None:
    print("\nSWEEP (model: README › Backtest; one row per setting and protocol, amounts in its value token)")
    table = [
        [
            "PROTOCOL",
            "MIN PROFIT",
            "TIP GWEI",
            "TAKEN",
            "OF",
            "REWARD",
            "GAS COST",
            "PROFIT",
            "MISSED BY THRESHOLD",
            "MISSED LATE",
        ]
    ]
    for r in rows:
        s = r.setting
        table.append(
            [
                r.protocol or "-",
                "config" if s.min_profit is None else format(s.min_profit, "f"),
                "config" if s.tip_gwei is None else format(s.tip_gwei, "f"),
                str(r.taken),
                str(r.opportunities),
                _amt(r.reward),
                _amt(r.gas_cost),
                _amt(r.profit),
                str(r.missed_by_threshold),
                str(r.missed_late),
            ]
        )
    print_table(table)


OPPORTUNITY_COLUMNS = [
    "protocol",
    "market",
    "account",
    "first_block",
    "kind",
    "repeat",
    "reward",
    "gas",
    "base_fee",
    "native_price",
    "min_profit",
    "gas_cost",
    "profit",
    "taken",
    "reason",
    "liquidated_block",
    "tx",
    "liquidator",
    "liquidator_is_keeper",
    "effective_gas_price",
    "actual_reward",
    "blocks_available",
    "ended",
    "l1_fee_wei",
    "l1_gas",
]
SWEEP_COLUMNS = [
    "protocol",
    "min_profit",
    "tip_gwei",
    "opportunities",
    "taken",
    "reward",
    "gas_cost",
    "profit",
    "missed_by_threshold",
    "missed_late",
]


def _write_files(out: Path, opps: list[Any], verdicts: list[Any], rows: list[Any], keeper: str) -> list[Path]:
    """opportunities.csv, sweep.csv (exact decimal strings in token units; wei and gas as integers) and two
    PNG charts (floats for display only)."""
    from keeper.charts import line_chart  # noqa: PLC0415 - matplotlib only here

    out.mkdir(parents=True, exist_ok=True)
    opp_csv, sweep_csv = out / "opportunities.csv", out / "sweep.csv"
    with opp_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(OPPORTUNITY_COLUMNS)
        for o, v in zip(opps, verdicts, strict=True):
            k = o.position
            w.writerow(
                [
                    k.protocol,
                    k.market,
                    k.account,
                    o.first_block if o.first_block is not None else "",
                    o.kind,
                    o.repeat,
                    _exact(o.reward),
                    o.gas if o.gas is not None else "",
                    o.base_fee if o.base_fee is not None else "",
                    _exact(o.price),
                    _exact(o.min_profit),
                    _exact(v.cost),
                    _exact(v.profit),
                    "yes" if v.taken else "no",
                    v.reason,
                    o.liquidated_block if o.liquidated_block is not None else "",
                    o.tx,
                    o.liquidator,
                    "yes" if o.liquidator and o.liquidator == keeper else "no",
                    o.effective_gas_price if o.effective_gas_price is not None else "",
                    _exact(o.actual_reward),
                    o.blocks_available,
                    o.ended,
                    o.l1_fee_wei,
                    o.l1_gas,
                ]
            )
    with sweep_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SWEEP_COLUMNS)
        for r in rows:
            s = r.setting
            w.writerow(
                [
                    r.protocol,
                    "config" if s.min_profit is None else format(s.min_profit, "f"),
                    "config" if s.tip_gwei is None else format(s.tip_gwei, "f"),
                    r.opportunities,
                    r.taken,
                    _exact(r.reward),
                    _exact(r.gas_cost),
                    _exact(r.profit),
                    r.missed_by_threshold,
                    r.missed_late,
                ]
            )
    points: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        s = r.setting
        name = f"{r.protocol} " * bool(r.protocol) + "tip " + ("config" if s.tip_gwei is None else f"{s.tip_gwei} gwei")
        xs, ys = points.setdefault(name, ([], []))
        xs.append(float(s.min_profit) if s.min_profit is not None else 0.0)
        ys.append(r.profit / 1e18)
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = dict(points)
    profit_png = line_chart(out / "profit_vs_threshold.png", "Backtest profit vs min_profit", "min_profit", "profit", series)
    seen = sorted((o.first_block if o.first_block is not None else o.liquidated_block or 0) for o in opps)
    taken = sorted(o.first_block for o, v in zip(opps, verdicts, strict=True) if v.taken and o.first_block is not None)
    time_png = line_chart(
        out / "opportunities_over_time.png",
        "Opportunities over time (cumulative)",
        "block",
        "opportunities",
        {
            "opportunities": (seen, list(range(1, len(seen) + 1))),
            "taken (this config)": (taken, list(range(1, len(taken) + 1))),
        },
        step=True,
    )
    return [opp_csv, sweep_csv, profit_png, time_png]
