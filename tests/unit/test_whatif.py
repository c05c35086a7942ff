"""`keeper whatif`'s protocol-agnostic core (keeper/whatif.py): shock and step parsing, symbol matching
with aliases, the liquidation map's new/total accounting, and the adapter hook dispatch."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from keeper.cli import main
from keeper.types import Evaluation, PositionKey, Status
from keeper.whatif import (
    Hit,
    ShockError,
    canonical,
    evaluate_shocked,
    factor_of,
    hits,
    liquidation_map,
    match,
    parse_shock,
    parse_steps,
    pct_text,
)

E = 10**18


def test_shock_parsing_and_exact_factors():
    assert parse_shock("eth=-10%") == ("ETH", Decimal(-10))
    assert parse_shock("WETH=+5%") == ("ETH", Decimal(5))
    assert parse_shock(" wbtc = −2.5 % ") == ("BTC", Decimal("-2.5"))
    assert factor_of(Decimal(-10)) == 9 * E // 10
    assert factor_of(Decimal("0.0000000000000001")) == E + 1  # 1e-16 % is one wei of factor
    for bad in ("ETH", "=-10%", "ETH=ten%", "ETH=-100%", "ETH=-150%", "ETH=1e-20%", "ETH=nan%"):
        with pytest.raises(ShockError):
            parse_shock(bad)
    assert canonical("wEtH") == "ETH" and canonical("crv") == "CRV"


def test_steps():
    assert parse_steps("-1%..-5%", Decimal(1)) == [Decimal(v) for v in (-1, -2, -3, -4, -5)]
    assert parse_steps("2%..3%", Decimal("0.5")) == [Decimal(2), Decimal("2.5"), Decimal(3)]
    assert parse_steps("-1%..-30%", Decimal(1))[-1] == Decimal(-30)
    for bad, step in (("-1%", Decimal(1)), ("-1%..-30%", Decimal(0)), ("-1%..-120%", Decimal(1)), ("0..-99%", Decimal("0.01"))):
        with pytest.raises(ShockError):
            parse_steps(bad, step)
    assert pct_text(Decimal(-10)) == "-10%" and pct_text(Decimal("2.50")) == "+2.5%" and pct_text(Decimal(0)) == "0%"


SYMBOLS = {"perp": {"0xA": "ETH", "0xB": "BTC"}, "llamma": {"0xC": "ETH", "0xD": "CRV"}}


def test_match_names_unknown_symbols_and_applies_to_every_adapter():
    assert match(SYMBOLS, {"ETH": Decimal(-10)}) == {"perp": {"0xA": 9 * E // 10}, "llamma": {"0xC": 9 * E // 10}}
    assert match(SYMBOLS, {"CRV": Decimal(5)}) == {"llamma": {"0xD": 105 * E // 100}}
    with pytest.raises(ShockError, match="DOGE") as exc:
        match(SYMBOLS, {"DOGE": Decimal(-1), "ETH": Decimal(1)})
    assert "BTC, CRV, ETH" in str(exc.value)


def hit(account: str, reward: int, notional: int, symbol: str = "USDC", now: str | None = "healthy") -> Hit:
    return Hit("perp", "perp_v1", "ETH", "0xA", account, "partial", now, reward, notional, 7, symbol)


def test_liquidation_map_counts_new_and_total_per_value_token():
    steps = [
        (Decimal(0), [hit("a", 1, 10)]),
        (Decimal(-1), [hit("a", 2, 20), hit("b", 3, 30), hit("x", 5, 50, "crvUSD")]),
        (Decimal(-2), [hit("a", 2, 20), hit("b", 3, 30), hit("c", 4, 40), hit("x", 5, 50, "crvUSD")]),
    ]
    rows = {(r.pct, r.value_symbol): r for r in liquidation_map(steps)}
    assert len(rows) == 6
    r = rows[(Decimal(-1), "USDC")]
    assert (r.new_positions, r.new_notional, r.new_reward) == (1, 30, 3)
    assert (r.total_positions, r.total_notional, r.total_reward) == (2, 50, 5)
    r = rows[(Decimal(-2), "USDC")]
    assert (r.new_positions, r.new_reward, r.total_positions) == (1, 4, 3)
    assert rows[(Decimal(-2), "crvUSD")].new_positions == 0 and rows[(Decimal(-1), "crvUSD")].new_positions == 1
    assert rows[(Decimal(0), "crvUSD")].total_positions == 0
    assert hit("a", 10, 0).profit == 3 and Hit("p", "k", "m", "0xA", "a", "full", None, 10, 0, None, "U").profit == 10


class FakeAdapter:
    """Just what keeper.whatif touches of an adapter: name, kind, value symbol, labels and the hook."""

    name, kind, value_symbol = "perp", "perp_v1", "USDC"

    def __init__(self, takes_twap: bool):
        self.seen: list[tuple] = []
        self.takes_twap = takes_twap

    def market_label(self, m: str) -> str:
        return {"0xA": "ETH", "0xB": "BTC"}[m]

    async def evaluate_shocked(self, head, factors, **kw):  # noqa: ANN001
        if not self.takes_twap and kw:
            raise TypeError("unexpected keyword")
        self.seen.append((factors, kw))
        key = PositionKey("perp", "0xA", "0x1")
        return [
            Evaluation(key, Status.FULL, False, 5 * E, {"notional": 100 * E}),
            Evaluation(PositionKey("perp", "0xA", "0x2"), Status.HEALTHY, False, None, {"notional": E}),
            Evaluation(PositionKey("perp", "0xB", "0x3"), Status.PARTIAL, True, E, {"notional": E}),  # not shocked
            Evaluation(PositionKey("perp", "0xA", "0x4"), Status.LOCKOUT, False, E, {}),
        ]


class TwapAdapter(FakeAdapter):
    async def evaluate_shocked(self, head, factors, *, twap: str = "sustained"):  # noqa: ANN001
        return await super().evaluate_shocked(head, factors, twap=twap)


def test_hook_dispatch_and_hits():
    plain, withtwap = FakeAdapter(False), TwapAdapter(True)
    asyncio.run(evaluate_shocked(plain, None, {"0xA": E}, "instant"))  # type: ignore[arg-type]
    asyncio.run(evaluate_shocked(withtwap, None, {"0xA": E}, "instant"))  # type: ignore[arg-type]
    assert plain.seen == [({"0xA": E}, {})] and withtwap.seen == [({"0xA": E}, {"twap": "instant"})]
    evals = asyncio.run(plain.evaluate_shocked(None, {"0xA": E}))
    found = hits(plain, evals, ["0xA"], {PositionKey("perp", "0xA", "0x1"): "healthy"}, 2)  # type: ignore[arg-type]
    assert [(h.account, h.status, h.reward, h.notional, h.profit, h.new) for h in found] == [
        ("0x1", "full", 5 * E, 100 * E, 5 * E - 2, True),
        ("0x4", "lockout", E, None, E - 2, True),
    ]


def test_base_adapter_has_no_model():
    from keeper.adapters.base import Adapter  # noqa: PLC0415

    class Bare(Adapter):
        kind = "bare"

        async def start(self, head):  # noqa: ANN001
            pass

        def addresses(self):
            return {}

        async def sync(self, head):  # noqa: ANN001
            pass

        def evaluate(self, head, *, full=False):  # noqa: ANN001
            return []

        async def confirm(self, candidates, head):  # noqa: ANN001
            return []

        def outcome(self, plan, receipt):  # noqa: ANN001
            raise AssertionError

    bare = Bare.__new__(Bare)
    with pytest.raises(NotImplementedError):
        asyncio.run(evaluate_shocked(bare, None, {}, "sustained"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv",
    [
        ["whatif"],
        ["whatif", "--shock", "ETH"],
        ["whatif", "--shock", "ETH=-10%", "--shock", "weth=-5%"],
        ["whatif", "--steps", "-1%"],
        ["whatif", "--steps", "-1%..-2%", "--step", "-1%"],
    ],
)
def test_cli_usage_errors_exit_2_before_touching_a_chain(argv, capsys, tmp_path):
    assert main(["-c", str(tmp_path / "missing.toml"), *argv]) == 2
    assert capsys.readouterr().err.startswith("keeper: ")


def test_negative_percentages_parse_as_values():
    from keeper.cli import _parser  # noqa: PLC0415

    args = _parser().parse_args(["whatif", "--shock", "ETH=-10%", "--steps", "-1%..-30%", "--step", "0.5%"])
    assert args.shock == ["ETH=-10%"] and args.steps == "-1%..-30%" and args.step == "0.5%"
    assert _parser().parse_args(["whatif", "--steps", "-.5%..-3%"]).steps == "-.5%..-3%"


def test_help_texts_render(capsys):
    for argv in (["--help"], ["whatif", "--help"], ["scan", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "ETH=-10%)" in out and "sustained" in out and "100 % = liquidatable" in out
