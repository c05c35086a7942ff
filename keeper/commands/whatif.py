"""`keeper whatif`: re-evaluate every position with shocked oracle and market prices (keeper/whatif.py).

    keeper whatif --shock ETH=-10% [--shock BTC=+5%] [--instant] [--json]
    keeper whatif --shock ETH=-10% --steps -1%..-30% [--step 1%] [--out DIR]   + the liquidation map

Built like `keeper scan` (read-only keeper, in-memory copy of the state, no Sender; reads as `key.address`
or the zero address, no key needed): nothing can be signed, sent or written, except the map's CSV and
PNG files in --out.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

from keeper.commands import err, load_config_or_report, print_table

NAME = "whatif"
HELP = "what becomes liquidatable if prices move (--shock ETH=-10%%), and the liquidation map (--steps)"

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    import re  # noqa: PLC0415

    # `--steps -1%..-30%`, `--step -0.5%`: argparse takes a value starting with "-" for an option unless it
    # looks like a negative number; let negative percentages count as such (this parser has no option
    # that does).
    parser._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d*%")  # noqa: SLF001
    parser.add_argument(
        "--shock",
        action="append",
        default=[],
        metavar="SYMBOL=±P%",
        help="move this asset's oracle and market prices (repeatable; ETH ≡ WETH, BTC ≡ WBTC, any case)",
    )
    parser.add_argument(
        "--steps",
        metavar="FROM..TO",
        help="liquidation map: each step from FROM to TO (e.g. -1%%..-30%%) applied to the --shock symbols "
        "(every symbol when none): reward and notional that become liquidatable per step (table, CSV, PNG)",
    )
    parser.add_argument("--step", default="1%", metavar="P%", help="distance between map steps (default 1%%)")
    parser.add_argument(
        "--instant",
        action="store_true",
        help="perp TWAP model: keep the current 900 s TWAP (the move just happened); default: sustained, the "
        "index, vAMM spot and TWAP all at the shocked price (the move held for 15 minutes)",
    )
    parser.add_argument("--json", action="store_true", help="JSON output (exact decimal strings)")
    parser.add_argument("--out", default="whatif-out", metavar="DIR", help="folder for the map's CSV and PNG files")


def run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - heavy imports only when the command runs

    import keeper.adapters  # noqa: F401, PLC0415 - registers the protocol kinds
    from keeper.log import configure_logging  # noqa: PLC0415
    from keeper.whatif import ShockError, parse_percent, parse_shock, parse_steps  # noqa: PLC0415

    try:
        shocks: dict[str, Decimal] = {}
        for text in args.shock:
            sym, pct = parse_shock(text)
            if sym in shocks:
                raise ShockError(f"--shock: {sym} given twice")
            shocks[sym] = pct
        steps = parse_steps(args.steps, parse_percent(args.step)) if args.steps else None
    except ShockError as exc:
        err(str(exc))
        return EXIT_CONFIG
    if not shocks and steps is None:
        err("give --shock SYMBOL=±P% and/or --steps FROM..TO")
        return EXIT_CONFIG
    cfg = load_config_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    configure_logging(cfg.log.level, cfg.log.format)
    try:
        return asyncio.run(_whatif(cfg, shocks, steps, "instant" if args.instant else "sustained", args.json, args.out))
    except KeyboardInterrupt:
        return EXIT_OK


async def _whatif(cfg: Any, shocks: dict[str, Decimal], steps: list[Decimal] | None, twap: str, as_json: bool, out: str) -> int:
    import time  # noqa: PLC0415

    from keeper.daemon import ReadOnlyKeeper, StartupError, monitor_address  # noqa: PLC0415
    from keeper.gas import FeeCapExceeded  # noqa: PLC0415
    from keeper.log import get_logger  # noqa: PLC0415
    from keeper.risk.profit import gas_cost_in_quote  # noqa: PLC0415
    from keeper.rpc import RpcError, RpcUnavailable  # noqa: PLC0415
    from keeper.whatif import ShockError, evaluate_shocked, hits, liquidation_map, match, symbol_table  # noqa: PLC0415

    t0 = time.monotonic()
    try:
        keeper = await ReadOnlyKeeper.open(cfg, log=get_logger(), address=monitor_address(cfg))
    except StartupError as exc:
        err(f"startup check failed: {exc}")
        return EXIT_FAILURE
    notes: list[str] = []
    scenario: list[Any] = []
    map_steps: list[tuple[Decimal, list[Any]]] = []
    try:
        head = keeper.head
        for a in keeper.adapters:
            await a.sync(head)
            await a.prepare_scan(head)
        symbols = symbol_table(keeper.adapters)
        try:
            factors = match(symbols, shocks)
            step_symbols = sorted(shocks) if shocks else sorted({s for t in symbols.values() for s in t.values()})
            match(symbols, dict.fromkeys(step_symbols, Decimal(0)))
        except ShockError as exc:
            err(f"--shock: {exc}")
            return EXIT_CONFIG
        try:  # the gas cost of a typical liquidation at this head's fees, in each adapter's value token
            fees = await keeper.executor.fee_quote(head)
        except (FeeCapExceeded, RpcError) as exc:
            fees = None
            notes.append(f"no gas cost estimate: {exc}")
        costs: dict[str, int | None] = {}
        now: dict[Any, str] = {}
        for a in keeper.adapters:
            price = await keeper.executor.price(a)
            costs[a.name] = (
                gas_cost_in_quote(a.typical_gas, fees.expected_fee_per_gas, price) if fees and price is not None else None
            )
            now.update({e.key: str(e.status) for e in a.evaluate(head)})
        skipped: set[str] = set()  # adapters without a what-if model
        evaluated: set[str] = set()

        async def run_shock(shock_factors: dict[str, dict[str, int]]) -> list[Any]:
            found: list[Any] = []
            for a in keeper.adapters:
                f = shock_factors.get(a.name)
                if not f or a.name in skipped:
                    continue
                try:
                    evals = await evaluate_shocked(a, head, f, twap)
                except NotImplementedError as exc:
                    skipped.add(a.name)
                    notes.append(f"{a.name} ({a.kind}) skipped: {exc or 'no what-if model'}")
                    continue
                evaluated.add(a.name)
                found += hits(a, evals, f, now, costs[a.name])
            return found

        if shocks:
            scenario = await run_shock(factors)
        if steps is not None:
            for pct in [Decimal(0), *steps]:
                map_steps.append((pct, await run_shock(match(symbols, dict.fromkeys(step_symbols, pct)))))
    except (RpcError, RpcUnavailable) as exc:
        err(f"RPC failed: {exc}")
        return EXIT_FAILURE
    finally:
        await keeper.close()
    rows = (
        liquidation_map(map_steps, {a.value_symbol for a in keeper.adapters if a.name in evaluated}) if steps is not None else []
    )
    files = _write_map(out, rows, step_symbols) if steps is not None else {}
    elapsed = time.monotonic() - t0
    if as_json:
        _print_json(head.number, shocks, twap, scenario, rows, files, notes, step_symbols if steps is not None else [], elapsed)
    else:
        _print_text(head.number, shocks, twap, scenario, rows, files, notes, step_symbols if steps is not None else [], elapsed)
    return EXIT_OK


def _dec(v: int | None) -> str | None:
    from keeper.units import decimal_text  # noqa: PLC0415

    return None if v is None else decimal_text(v)


def _write_map(out: str, rows: list[Any], symbols: list[str]) -> dict[str, str]:
    """The map as CSV (exact decimals) and two PNG bar charts (reward, notional newly liquidatable per
    step; one bar per value token). Returns kind → path."""
    import csv  # noqa: PLC0415
    from collections.abc import Sequence  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from keeper.charts import bar_chart  # noqa: PLC0415
    from keeper.whatif import pct_text  # noqa: PLC0415

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "liquidation_map.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "step_pct",
                "value_symbol",
                "new_positions",
                "new_notional",
                "new_reward",
                "total_positions",
                "total_notional",
                "total_reward",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    format(r.pct, "f"),
                    r.value_symbol,
                    r.new_positions,
                    _dec(r.new_notional),
                    _dec(r.new_reward),
                    r.total_positions,
                    _dec(r.total_notional),
                    _dec(r.total_reward),
                ]
            )
    labels = list(dict.fromkeys(pct_text(r.pct) for r in rows)) or ["0%"]
    tokens = sorted({r.value_symbol for r in rows})
    moved = ", ".join(symbols)

    def series(attr: str) -> dict[str, Sequence[float]]:
        return {f"{sym}": [float(getattr(r, attr)) / 1e18 for r in rows if r.value_symbol == sym] for sym in tokens} or {
            "none": [0.0] * len(labels)
        }

    reward_png = bar_chart(
        folder / "liquidation_map_reward.png",
        f"Keeper reward newly liquidatable per step ({moved})",
        "price move",
        f"reward ({', '.join(tokens) or '-'})",
        labels,
        series("new_reward"),
    )
    notional_png = bar_chart(
        folder / "liquidation_map_notional.png",
        f"Position notional newly liquidatable per step ({moved})",
        "price move",
        f"notional ({', '.join(tokens) or '-'})",
        labels,
        series("new_notional"),
    )
    return {"csv": str(csv_path), "reward_png": str(reward_png), "notional_png": str(notional_png)}


def _print_json(
    block: int,
    shocks: dict[str, Decimal],
    twap: str,
    scenario: list[Any],
    rows: list[Any],
    files: dict[str, str],
    notes: list[str],
    step_symbols: list[str],
    elapsed: float,
) -> None:
    import json  # noqa: PLC0415

    doc = {
        "block": block,
        "model": twap,
        "shocks": {s: format(p, "f") for s, p in shocks.items()},
        "liquidatable": [
            {
                "protocol": h.protocol,
                "kind": h.kind,
                "market": h.market,
                "market_address": h.market_address,
                "account": h.account,
                "status": h.status,
                "status_now": h.now,
                "new": h.new,
                "reward": _dec(h.reward),
                "notional": _dec(h.notional),
                "est_cost": _dec(h.cost),
                "est_profit": _dec(h.profit),
                "value_symbol": h.value_symbol,
            }
            for h in scenario
        ],
        "map_symbols": step_symbols,
        "map": [
            {
                "step_pct": format(r.pct, "f"),
                "value_symbol": r.value_symbol,
                "new_positions": r.new_positions,
                "new_notional": _dec(r.new_notional),
                "new_reward": _dec(r.new_reward),
                "total_positions": r.total_positions,
                "total_notional": _dec(r.total_notional),
                "total_reward": _dec(r.total_reward),
            }
            for r in rows
        ],
        "files": files,
        "notes": notes,
        "seconds": round(elapsed, 3),
    }
    print(json.dumps(doc, indent=1))


def _print_text(
    block: int,
    shocks: dict[str, Decimal],
    twap: str,
    scenario: list[Any],
    rows: list[Any],
    files: dict[str, str],
    notes: list[str],
    step_symbols: list[str],
    elapsed: float,
) -> None:
    from keeper.units import fmt_units  # noqa: PLC0415
    from keeper.whatif import pct_text  # noqa: PLC0415

    model = (
        "sustained: index, market spot and TWAP at the shocked price"
        if twap == "sustained"
        else "instant: index and market spot moved, the TWAP as now"
    )
    if shocks:
        moved = ", ".join(f"{s} {pct_text(p)}" for s, p in shocks.items())
        new = sum(1 for h in scenario if h.new)
        print(f"block {block}: shock {moved} ({model}): {len(scenario)} liquidatable, {new} of them not now")
        if scenario:
            table = [["PROTOCOL", "MARKET", "ACCOUNT", "STATUS", "NOW", "REWARD", "NOTIONAL", "EST COST", "EST PROFIT", "TOKEN"]]
            for h in scenario:
                table.append(
                    [
                        h.protocol,
                        h.market,
                        h.account,
                        h.status,
                        h.now or "-",
                        fmt_units(h.reward, 18, 4),
                        fmt_units(h.notional, 18, 2),
                        fmt_units(h.cost, 18, 4),
                        fmt_units(h.profit, 18, 4),
                        h.value_symbol,
                    ]
                )
            print_table(table)
    if rows:
        print(
            f"\nliquidation map, block {block}: {', '.join(step_symbols)} moved by each step ({model}); 0% = the model at today's index"
        )
        table = [["STEP", "TOKEN", "NEW POS", "NEW NOTIONAL", "NEW REWARD", "ALL POS", "ALL NOTIONAL", "ALL REWARD"]]
        for r in rows:
            table.append(
                [
                    pct_text(r.pct),
                    r.value_symbol,
                    str(r.new_positions),
                    fmt_units(r.new_notional, 18, 2),
                    fmt_units(r.new_reward, 18, 4),
                    str(r.total_positions),
                    fmt_units(r.total_notional, 18, 2),
                    fmt_units(r.total_reward, 18, 4),
                ]
            )
        print_table(table)
    for kind, path in files.items():
        print(f"{kind}: {path}")
    for n in notes:
        print(f"note: {n}")
    print(f"({elapsed:.2f} s)")
