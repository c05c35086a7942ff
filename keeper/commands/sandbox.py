"""`keeper sandbox`: a local chain with the reference protocols that stays up (keeper/devtools/sandbox.py).

keeper sandbox [--workdir sandbox] [--resume | --reset] [--port P] [--block-time S]
keeper sandbox move MARKET PCT [--protocol perp|llamma|all] [--steps N] [--no-twap] [--json]
keeper sandbox open perp MARKET long|short LEVERAGE MARGIN [--account ADDR] [--json]
keeper sandbox open llamma MARKET COLLATERAL [--bands N] [--ltv PCT | --debt AMOUNT] [--account ADDR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

NAME = "sandbox"
HELP = "local anvil chain with the reference protocols, seeded positions and a funded keeper; stays up until Ctrl-C"

EPILOG = """\
examples:
  keeper sandbox                                   start it (files in ./sandbox), Ctrl-C saves the chain
  keeper sandbox --resume                          continue the saved chain (same addresses)
  keeper -c sandbox/keeper.toml run                a keeper against it (another shell)
  keeper sandbox move ETH -8%                      ETH index/oracle −8 %, vAMM and LLAMMA arbitraged to it
  keeper sandbox move BTC +3% --protocol perp      only the perp BTC market
  keeper sandbox open perp ETH long 10x 1000       a new account opens a 10x long with 1,000 USDC margin
  keeper sandbox open llamma ETH 10 --bands 4 --ltv 95%
                                                   a new account borrows 95 % of max_borrowable on 10 ETH
"""


def _workdir_option(p: argparse.ArgumentParser, top: bool) -> None:
    p.add_argument(
        "--workdir",
        default="sandbox" if top else argparse.SUPPRESS,
        help="the sandbox's folder (default: sandbox): a new or empty folder, or one a sandbox made",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Start anvil, deploy the reference Perp v1 and LLAMMA contracts with seeded positions and loans,\n"
        "write <workdir>/keeper.toml (a funded keeper key in an encrypted keystore) and <workdir>/sandbox.json,\n"
        "print how to use it, and serve until Ctrl-C / SIGTERM, which saves the chain (<workdir>/chain-state.json)."
    )
    parser.epilog = EPILOG
    _workdir_option(parser, True)
    parser.add_argument("--resume", action="store_true", help="reload the saved chain (same addresses and accounts)")
    parser.add_argument("--reset", action="store_true", help="discard a saved chain in the workdir and start a new one")
    parser.add_argument(
        "--port", type=int, default=None, help="anvil's port on 127.0.0.1 (default: the saved one, else 8545, else free)"
    )
    parser.add_argument(
        "--block-time",
        type=float,
        default=2.0,
        help="mine an empty block after this many seconds without one (default 2; 0: only transactions mine)",
    )
    sub = parser.add_subparsers(dest="sandbox_action", metavar="{move,open}")

    mv = sub.add_parser(
        "move",
        help="move a market's oracle and its market price as arbitrage would",
        description=(
            "Perp: the index price is set, a whale trades the vAMM spot to it and 15 minutes pass (TWAP). "
            "LLAMMA: the oracle moves in steps, an arbitrageur trading the AMM back to it after each (bands convert). "
            "A market name present in both protocols (ETH) moves both unless --protocol says otherwise."
        ),
    )
    _workdir_option(mv, False)
    mv.add_argument("--protocol", choices=("all", "perp", "llamma"), default="all", help="which protocol's market (default: all)")
    mv.add_argument("--steps", type=int, default=None, help="LLAMMA oracle updates (default: one per 2 %%)")
    mv.add_argument("--no-twap", action="store_true", help="perp: do not let 15 minutes pass after the trade")
    mv.add_argument("--json", action="store_true", help="JSON output")
    mv.add_argument("market", help="market name: ETH or BTC")
    mv.add_argument("change", nargs=argparse.REMAINDER, metavar="PCT", help="the change in percent: -8%%, +5%%, -0.5")

    op = sub.add_parser("open", help="open a perp position or a LLAMMA loan (a new account unless --account)")
    osub = op.add_subparsers(dest="open_protocol", metavar="{perp,llamma}", required=True)
    pp = osub.add_parser("perp", help="open perp MARKET long|short LEVERAGE MARGIN (e.g. ETH long 10x 1000)")
    _workdir_option(pp, False)
    pp.add_argument("market", help="ETH or BTC")
    pp.add_argument("side", help="long or short")
    pp.add_argument("leverage", help="e.g. 10x (at most the ClearingHouse's 10x)")
    pp.add_argument("margin", help="margin in USDC, e.g. 1000")
    pp.add_argument("--account", default=None, help="the trader (default: a new account; anvil impersonates it)")
    pp.add_argument("--json", action="store_true", help="JSON output")
    lp = osub.add_parser("llamma", help="open llamma MARKET COLLATERAL [--bands N] [--ltv PCT | --debt AMOUNT]")
    _workdir_option(lp, False)
    lp.add_argument("market", help="ETH")
    lp.add_argument("collateral", help="collateral in tokens, e.g. 10")
    lp.add_argument("--bands", type=int, default=10, help="bands (4–50, default 10)")
    lp.add_argument("--ltv", default=None, help="debt as a share of max_borrowable, e.g. 95%% (default 90%%)")
    lp.add_argument("--debt", default=None, help="debt in crvUSD instead of --ltv")
    lp.add_argument("--account", default=None, help="the borrower (default: a new account; anvil impersonates it)")
    lp.add_argument("--json", action="store_true", help="JSON output")


def _err(msg: str) -> None:
    print(f"keeper sandbox: {msg}", file=sys.stderr)


def _decimal(text: str, what: str, suffix: str = "") -> Decimal:
    raw = text.strip()
    if suffix and raw.lower().endswith(suffix):
        raw = raw[: -len(suffix)]
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{what} {text!r} is not a number")
    return value


def _fmt(wei: int, digits: int = 2) -> str:
    return f"{Decimal(wei) / 10**18:,.{digits}f}"


def run(args: argparse.Namespace) -> int:
    from keeper.devtools.sandbox import SandboxDown, SandboxError  # noqa: PLC0415

    try:
        action = getattr(args, "sandbox_action", None)
        if action == "move":
            return _move(args)
        if action == "open":
            return _open(args)
        return _serve(args)
    except (SandboxError, ValueError) as exc:
        _err(str(exc))
        return 2
    except SandboxDown as exc:
        _err(str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - a revert or a node that failed: one line, no traceback
        from keeper.devtools.anvil import AnvilError  # noqa: PLC0415
        from keeper.devtools.chain import TxFailed  # noqa: PLC0415

        if isinstance(exc, TxFailed):
            _err(f"transaction reverted: {exc.reason}")
            return 1
        if isinstance(exc, AnvilError):
            _err(f"anvil failed: {str(exc).splitlines()[0]} (its log is in the workdir: anvil.log)")
            return 1
        raise


def _serve(args: argparse.Namespace) -> int:
    from keeper.devtools.sandbox import SandboxError, SandboxOptions, run_sandbox  # noqa: PLC0415

    if args.resume and args.reset:
        raise SandboxError("--resume and --reset: give one of them")
    opts = SandboxOptions(workdir=args.workdir, resume=args.resume, reset=args.reset, port=args.port, block_time=args.block_time)
    return run_sandbox(opts)


def _move(args: argparse.Namespace) -> int:
    from keeper.devtools.sandbox import SandboxError, move  # noqa: PLC0415
    from keeper.devtools.scenario import parse_pct  # noqa: PLC0415

    change: list[str] = list(args.change)
    if not change:
        raise SandboxError("PCT: give the change, e.g. `keeper sandbox move ETH -8%`")
    if len(change) > 1:  # options after PCT (it may start with '-', so argparse handed over the rest)
        extra = argparse.ArgumentParser(prog="keeper sandbox move", add_help=False)
        extra.add_argument("--workdir")
        extra.add_argument("--protocol", choices=("all", "perp", "llamma"))
        extra.add_argument("--steps", type=int)
        extra.add_argument("--no-twap", action="store_true", default=None)
        extra.add_argument("--json", action="store_true", default=None)
        more, unknown = extra.parse_known_args(change[1:])
        if unknown:
            raise SandboxError(f"unexpected arguments after PCT: {' '.join(unknown)}")
        for k, v in vars(more).items():
            if v is not None:
                setattr(args, k, v)
    try:
        pct = parse_pct(change[0])
    except ValueError as exc:
        raise SandboxError(f"PCT {exc}") from None
    if args.steps is not None and args.steps < 1:
        raise SandboxError(f"--steps {args.steps}: must be ≥ 1")
    moves = move(args.workdir, args.market, pct, protocol=args.protocol, steps=args.steps, twap=not args.no_twap)
    if args.json:
        print(json.dumps([{**m.__dict__} for m in moves]))
        return 0
    for m in moves:
        if m.protocol == "perp":
            print(
                f"perp {m.market}: index {_fmt(m.oracle_before)} → {_fmt(m.oracle_after)} ({pct:+}%), vAMM spot "
                f"{_fmt(m.market_before)} → {_fmt(m.market_after)} after a whale's trade"
                + ("; 15 minutes passed (TWAP)" if not args.no_twap else "")
            )
        else:
            print(
                f"llamma {m.market}: oracle {_fmt(m.oracle_before)} → {_fmt(m.oracle_after)} ({pct:+}%), AMM price "
                f"{_fmt(m.market_before)} → {_fmt(m.market_after)}, arbitraged ({m.txs} transactions)"
            )
    return 0


def _open(args: argparse.Namespace) -> int:
    from keeper.devtools.sandbox import open_llamma, open_perp  # noqa: PLC0415

    out: dict[str, Any]
    if args.open_protocol == "perp":
        lev = _decimal(args.leverage, "LEVERAGE", "x")
        margin = _decimal(args.margin, "MARGIN")
        out = open_perp(args.workdir, args.market, args.side, lev, margin, args.account)
        line = (
            f"opened perp {out['market']} {out['side']} {out['leverage']}x with {out['margin']} USDC margin for "
            f"{out['account']}: size {_fmt(out['size'], 6)}, notional {_fmt(out['open_notional'])} USDC, margin ratio "
            f"{_fmt(out['margin_ratio'] * 100)} % (block {out['block']})"
        )
    else:
        ltv = _decimal(args.ltv, "--ltv", "%") if args.ltv is not None else None
        debt = _decimal(args.debt, "--debt") if args.debt is not None else None
        out = open_llamma(args.workdir, args.market, _decimal(args.collateral, "COLLATERAL"), args.bands, ltv, debt, args.account)
        line = (
            f"opened llamma {out['market']} loan for {out['account']}: {args.collateral} collateral, debt "
            f"{_fmt(out['debt'])} crvUSD (max_borrowable {_fmt(out['max_borrowable'])}), bands {out['bands'][0]}–"
            f"{out['bands'][1]}, health {_fmt(out['health'] * 100)} % (block {out['block']})"
        )
    print(json.dumps(out) if args.json else line)
    return 0
