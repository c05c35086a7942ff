"""keeper/backtest.py's pure parts: opportunities from block records and liquidation events (episodes,
repeats, recovered, late), the model's decision per setting, sweep parsing. No chain."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest

import keeper.adapters  # noqa: F401 - registers the protocol kinds
from keeper.backtest import BlockRecord, Event, Progress, Setting, Sighting, judge, opportunities, parse_sweeps, policy_for, sweep
from keeper.config import parse_config
from keeper.gas import next_base_fee
from keeper.types import PositionKey
from keeper.units import GWEI, WAD

M = "0x" + "11" * 20
X, Y, Z, W = (str(PositionKey("perp", M, "0x" + c * 40)) for c in "abcd")
RIVAL, KEEPER = "0x" + "ee" * 20, "0x" + "99" * 20
BASE_FEE, GAS_USED, GAS_LIMIT = 10 * GWEI, 15_000_000, 30_000_000  # at target: next base fee = base fee
PRICE = 3000 * WAD


def cfg(**profit):
    return parse_config(
        {
            "chain": {"rpc_urls": ["http://127.0.0.1:1"], "chain_id": 31337},
            "key": {"address": KEEPER},
            "pricing": {"source": "fixed", "value": "3000"},
            "profit": {"min_profit": "0", **profit},
            "gas": {"priority_fee_gwei": "1", "max_fee_per_gas_gwei": "500"},
            "protocols": [{"kind": "perp_v1", "name": "perp", "clearing_house": "0x" + "22" * 20}],
        },
        environ={},
    )


def sighting(reward: int, gas: int = 400_000, kind: str = "partial") -> Sighting:
    return Sighting(kind, reward, gas, 0, PRICE, "")


def rec(n: int, liq: list[str], new: dict[str, Sighting] | None = None) -> BlockRecord:
    return BlockRecord(n, 1000 + n, BASE_FEE, GAS_USED, GAS_LIMIT, liq, new or {})


def ev(block: int, key: str, who: str, reward: int, idx: int = 0, kind: str = "partial") -> Event:
    return Event(block, f"0x{block:02x}{idx:02x}", idx, key, who, who, reward, kind, 12 * GWEI, 300_000)


def scenario():
    records = {
        10: rec(10, []),
        11: rec(11, [X], {X: sighting(80 * WAD)}),
        12: rec(12, [X, Y], {Y: sighting(20 * WAD, kind="full")}),
        13: rec(13, [X]),
        14: rec(14, [X], {X: sighting(30 * WAD)}),  # still liquidatable after the rival's partial at 14
        15: rec(15, [], {}),
        16: rec(16, [W], {W: sighting(20 * WAD, gas=500_000, kind="full")}),
    }
    events = [
        ev(11, Z, RIVAL, 7 * WAD, kind="full"),  # never seen at a head: late
        ev(14, X, RIVAL, 40 * WAD),
        ev(15, X, KEEPER, 30 * WAD, 0),
        ev(15, X, KEEPER, 25 * WAD, 1),  # a repeated partial in the same block
    ]
    return records, events


def test_opportunities_episodes_repeats_recovered_and_late():
    records, events = scenario()
    opps = opportunities(records, events, 10, 16)
    got = [
        (o.key, o.first_block, o.liquidated_block, o.liquidator, o.reward, o.blocks_available, o.repeat, o.ended) for o in opps
    ]
    assert got == [
        (Z, None, 11, RIVAL, 7 * WAD, 0, 0, "liquidated"),
        (Y, 12, None, "", 20 * WAD, 1, 0, "recovered"),
        (X, 11, 14, RIVAL, 80 * WAD, 3, 0, "liquidated"),
        (X, 14, 15, KEEPER, 30 * WAD, 1, 0, "liquidated"),
        (X, 14, 15, KEEPER, 25 * WAD, 1, 1, "liquidated"),
        (W, 16, None, "", 20 * WAD, 1, 0, "open"),
    ]
    assert [o.tx for o in opps if o.key == X] == ["0x0e00", "0x0f00", "0x0f01"]
    assert all(o.effective_gas_price == 12 * GWEI for o in opps if o.liquidated_block)


def test_model_costs_at_the_first_blocks_fees_and_sweeps_exactly():
    records, events = scenario()
    c = cfg()
    opps = opportunities(records, events, 10, 16)
    fee = next_base_fee(BASE_FEE, GAS_USED, GAS_LIMIT) + 1 * GWEI
    cost_400k = -(-400_000 * fee * PRICE // WAD)
    cost_500k = -(-500_000 * fee * PRICE // WAD)
    policy = policy_for(c, Setting(None, None))
    v = judge(opps[2], c, policy, Setting(None, None))
    assert (v.taken, v.cost, v.profit) == (True, cost_400k, 80 * WAD - cost_400k)
    assert judge(opps[0], c, policy, Setting(None, None)).reason == "late"
    rows = sweep(opps, c, parse_sweeps(["min_profit=0,10,45", "tip=1,2"]))
    by = {(r.setting.min_profit, r.setting.tip_gwei): r for r in rows}
    assert len(rows) == 6
    r0 = by[(Decimal(0), Decimal(1))]
    assert (r0.opportunities, r0.taken, r0.missed_late) == (6, 5, 1)
    assert r0.reward == (20 + 80 + 30 + 25 + 20) * WAD
    assert r0.gas_cost == 4 * cost_400k + cost_500k
    assert r0.profit == r0.reward - r0.gas_cost
    r10 = by[(Decimal(10), Decimal(1))]  # Y (20 − 13.2) and W (20 − 16.5) below the threshold after gas
    assert (r10.taken, r10.reward, r10.missed_by_threshold) == (3, (80 + 30 + 25) * WAD, 2)
    r45 = by[(Decimal(45), Decimal(1))]  # only X's first episode (80 − 13.2) clears 45 after gas
    assert (r45.taken, r45.reward, r45.missed_by_threshold) == (1, 80 * WAD, 4)
    fee2 = fee + GWEI
    r0t2 = by[(Decimal(0), Decimal(2))]
    assert r0t2.gas_cost == 4 * -(-400_000 * fee2 * PRICE // WAD) + -(-500_000 * fee2 * PRICE // WAD)


def test_parse_sweeps_product_and_errors():
    assert parse_sweeps([]) == [Setting(None, None)]
    assert parse_sweeps(["min_profit=0,1.5"]) == [Setting(Decimal(0), None), Setting(Decimal("1.5"), None)]
    for bad in ["min_profit", "gas=1", "tip=", "tip=a", "min_profit=-1"]:
        with pytest.raises(ValueError, match="--sweep"):
            parse_sweeps([bad])


def test_block_record_round_trips_through_json():
    r = rec(12, [X, Y], {Y: sighting(2 * WAD, kind="full")})
    assert BlockRecord.from_json(r.to_json()) == r


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bar_with_eta_once_it_takes_long_enough():
    quiet = _Stream(tty=True)
    bar = Progress(100, stream=quiet, after=3600)
    bar.update(50)
    assert quiet.getvalue() == ""  # a short run shows nothing
    tty = _Stream(tty=True)
    bar = Progress(100, stream=tty, after=0)
    bar.update(25)
    bar.update(50)
    bar.close()
    assert tty.getvalue().count("\r[") == 2 and "50/100 blocks" in tty.getvalue() and "ETA" in tty.getvalue()
    plain = _Stream(tty=False)
    bar = Progress(100, stream=plain, after=0)
    for i in range(1, 101):
        bar.update(i)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 11 and all(line.startswith("backtest: ") for line in lines)  # one per 10 %, no \r
    assert "100/100 blocks" in lines[-1]
