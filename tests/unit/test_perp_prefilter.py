"""The vectorised perp prefilter (keeper/risk/perp_vec.py): its float bound never clears a position
whose exact SPOT margin ratio is below the threshold (property, thresholds placed a few wei from
the exact ratio), it does clear ordinary healthy positions, and the adapter's per-block evaluation
through it equals the exact evaluation of every position, block after block, while positions are
opened, changed and closed (the arrays follow the position dict incrementally)."""

from __future__ import annotations

import random
from math import isqrt
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from keeper.adapters.perp_v1 import MarketInfo, PerpMarketPolicy, PerpV1Adapter
from keeper.config import parse_config
from keeper.risk import perp as pm
from keeper.risk.perp_vec import MarketArrays, PositionBook, TrackedPositions, spot_ratio_at_least
from keeper.store import Store
from keeper.types import Block, Evaluation, PositionKey, Status
from tests.harness import RecordingLog, keeper_config

E = 10**18
CH = "0x" + "11" * 20
USDC = "0x" + "44" * 20
AMMS = ["0x" + f"{0xA1 + i:02x}" * 20 for i in range(3)]


# ---- the bound -------------------------------------------------------------------------------------------------


def exact_spot_mr(pos: pm.Position, q: int, b: int, cpf: int) -> int | None:
    """perp.ratios' spot ratio, or None where the contract's maths reverts."""
    m = pm.MarketState(q, b, pm.div_d(q, b) or 1, cpf, (pm.Snapshot(q, b, 0, 1),), 1)
    try:
        n = pm.notional(pos, m, pm.PnlOption.SPOT)
        return pm.sdiv_d(pos.margin + pm.unrealized_pnl(pos, n) - pm.funding_payment(pos, cpf), n)
    except pm.AmmMathError:
        return None


def clears(pos: pm.Position, q: int, b: int, cpf: int, threshold: int) -> bool:
    """The prefilter's verdict as the adapter gets it (the arrays' own float conversion)."""
    arrays: MarketArrays[str, None] = MarketArrays()
    arrays.upsert("k", pos, lambda _k: None)
    return arrays.unproven(q, b, cpf, threshold) == []


reserve = st.one_of(st.integers(10**18, 10**30), st.integers(1, 10**40))
amount = st.one_of(st.integers(0, 10**26), st.integers(0, 10**40))
signed = st.one_of(st.integers(-(10**24), 10**24), st.integers(-(10**40), 10**40))


@settings(max_examples=3000, deadline=None)
@given(
    q=reserve,
    b=reserve,
    size=st.one_of(st.integers(-(10**26), 10**26), st.integers(-(10**40), 10**40)).filter(bool),
    margin=amount,
    open_notional=amount,
    cpf=signed,
    last_cpf=signed,
    delta=st.one_of(st.integers(-8, 8), st.integers(-(10**12), 10**12), st.integers(-(10**19), 10**19)),
)
@example(q=3 * 10**25, b=10**22, size=-(10**22) + 1, margin=10**21, open_notional=10**22, cpf=0, last_cpf=0, delta=0)
@example(q=3 * 10**25, b=10**22, size=1, margin=1, open_notional=1, cpf=0, last_cpf=0, delta=0)
@example(q=3 * 10**25, b=10**22, size=-(10**22) + 10**15, margin=10**41, open_notional=10**22, cpf=0, last_cpf=0, delta=1)
@example(q=10**18, b=10**18, size=10**17, margin=10**17, open_notional=10**17, cpf=10**40, last_cpf=10**40 - 1, delta=1)
def test_the_bound_never_clears_a_spot_ratio_below_the_threshold(q, b, size, margin, open_notional, cpf, last_cpf, delta):
    pos = pm.Position(size, margin, open_notional, last_cpf)
    mr = exact_spot_mr(pos, q, b, cpf)
    threshold = (mr if mr is not None else 0) + delta
    if clears(pos, q, b, cpf, threshold):
        assert mr is not None and mr >= threshold


@settings(max_examples=1500, deadline=None)
@given(
    q=st.integers(10**18, 10**30),
    b=st.integers(10**18, 10**30),
    left=st.integers(1, 10**9),  # B − s: from 1 wei to a billionth of B (the float B − s cancels)
    ratio=st.integers(-(10**18), 10**18),
    open_notional=st.integers(0, 10**30),
    delta=st.integers(-8, 8),
)
def test_the_bound_holds_for_shorts_that_nearly_empty_the_reserve(q, b, left, ratio, open_notional, delta):
    """A short whose size leaves `left` base in the vAMM: N = Q·s/left is huge and B − s cancels in
    float; the margin is chosen so that the ratio sits near `ratio`, the threshold a few wei off."""
    size = b - max(1, b * left // 10**18)
    assume(size > 0)
    n = q * size // (b - size)
    margin = max(0, n + n * ratio // E - open_notional)
    pos = pm.Position(-size, margin, open_notional, 0)
    mr = exact_spot_mr(pos, q, b, 0)
    threshold = (mr if mr is not None else 0) + delta
    if clears(pos, q, b, 0, threshold):
        assert mr is not None and mr >= threshold


@settings(max_examples=500, deadline=None)
@given(
    price=st.integers(1, 100_000),
    depth=st.integers(100, 10**6),
    margin=st.integers(10, 100_000),
    leverage=st.integers(1, 10),
    long=st.booleans(),
    move=st.integers(-300, 300),  # per-mille
    funding=st.integers(-(10**17), 10**17),
)
def test_the_bound_clears_ordinary_positions_clear_of_the_threshold(price, depth, margin, leverage, long, move, funding):
    b = depth * E
    q = b * price
    notional = margin * leverage * E
    size = notional * E // (price * E)
    assume(size > 0 and size < b // 2)
    pos = pm.Position(size if long else -size, margin * E, notional, 0)
    k = q * b
    b2 = isqrt(k * 1000 // (1000 + move))
    q2 = k // b2
    mr = exact_spot_mr(pos, q2, b2, funding)
    assume(mr is not None)
    assert clears(pos, q2, b2, funding, mr - abs(mr) // 10**6 - 10**9)  # a millionth below: proven
    assert not clears(pos, q2, b2, funding, mr + 1)


def test_the_vectorised_bound_is_per_position():
    positions = [
        pm.Position(E, 1000 * E, 3000 * E, 0),
        pm.Position(E, 100 * E, 3000 * E, 0),
        pm.Position(-E, 1000 * E, 3000 * E, 0),
    ]
    arr = [np.array([float(getattr(p, f)) for p in positions]) for f in ("size", "margin", "open_notional", "last_cpf")]
    got = spot_ratio_at_least(*arr, 3 * 10**25, 10**22, 0, 10**17)
    assert got.tolist() == [clears(p, 3 * 10**25, 10**22, 0, 10**17) for p in positions] == [True, False, True]


def test_values_the_float_maths_cannot_hold_go_to_the_exact_maths():
    big = 10**400
    assert not clears(pm.Position(E, E, E, 0), big, E, 0, 0)
    assert not clears(pm.Position(big, E, E, 0), 3 * 10**25, 10**22, 0, 0)
    assert not clears(pm.Position(-(10**22), E, 3 * 10**25, 0), 3 * 10**25, 10**22, 0, -(10**30))  # empties the reserve
    assert not clears(pm.Position(0, E, E, 0), 3 * 10**25, 10**22, 0, -(10**30))  # no notional
    assert clears(pm.Position(E, 1000 * E, 3000 * E, 0), 3 * 10**25, 10**22, 0, 10**17)


# ---- the arrays follow the position dict -------------------------------------------------------------------------


def test_tracked_positions_record_every_change():
    d: TrackedPositions[str, int] = TrackedPositions({"a": 1})
    assert d.take_changes() == (True, {"a"})
    d["b"] = 2
    d.update(c=3)
    d |= {"d": 4}
    d.setdefault("e", 5)
    d.setdefault("a", 9)  # present: no change
    assert d.pop("a") == 1 and d.pop("zz", None) is None
    del d["b"]
    assert d.take_changes() == (False, {"a", "b", "c", "d", "e"})
    d.popitem()
    assert d.take_changes() == (False, {"e"})
    d.clear()
    assert d.take_changes() == (True, set())


def test_the_book_moves_the_last_entry_into_a_hole_and_keeps_items():
    positions: TrackedPositions[tuple[str, str], pm.Position] = TrackedPositions()
    book: PositionBook[tuple[str, str], str] = PositionBook(lambda k: k[0], lambda k: f"item {k[1]}")
    for i in range(100):
        positions[("m", f"t{i}")] = pm.Position(i + 1, E, E, 0)
    book.sync(positions)
    arrays = book.markets["m"]
    first = arrays.items[0]
    del positions[("m", "t0")]
    positions[("m", "t5")] = pm.Position(-7, 2 * E, E, 3)
    book.sync(positions)
    assert arrays.n == 99 and arrays.keys[0] == ("m", "t99") and arrays.index[("m", "t99")] == 0
    assert first not in arrays.items and arrays.items[arrays.index[("m", "t5")]] == "item t5"
    for k, i in arrays.index.items():
        assert arrays.keys[i] == k and arrays.positions[i] == positions[k]
        assert (arrays.size[i], arrays.margin[i], arrays.last_cpf[i]) == (
            positions[k].size,
            positions[k].margin,
            positions[k].last_cpf,
        )
    items = {k: arrays.items[i] for k, i in arrays.index.items()}
    book.sync(dict(positions))  # any other mapping: rebuilt, items of the keys still there kept
    again = book.markets["m"]
    assert {k: again.items[i] for k, i in again.index.items()} == items


# ---- the adapter: prefiltered evaluation == exact evaluation of every position ----------------------------------------


def adapter() -> PerpV1Adapter:
    config = parse_config(
        keeper_config("http://127.0.0.1:1", ":memory:", [{"kind": "perp_v1", "name": "perp", "clearing_house": CH}]),
        environ={},
    )
    ctx = SimpleNamespace(rpc=None, store=Store(":memory:"), config=config, log=RecordingLog())
    a = PerpV1Adapter(config.protocols[0], ctx)
    a._params = pm.PerpParams(625 * 10**14, 25 * 10**15, 25 * 10**16)
    a.info = {amm: MarketInfo(amm, f"M{i}", USDC, 6, "USDC", 0, False, PerpMarketPolicy()) for i, amm in enumerate(AMMS)}
    return a


class Markets:
    """Per market: reserves moved by a random walk, snapshots every 12 s, an oracle near spot."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.now = 10**6
        self.history: dict[str, list[pm.Snapshot]] = {}
        self.k = {amm: (3_000 * 10**4 * E) * (10**4 * E) // (i + 1) for i, amm in enumerate(AMMS)}
        self.memos = {amm: pm.TwapMemo() for amm in AMMS}
        self.price = {amm: 3_000 * E // (i + 1) for i, amm in enumerate(AMMS)}

    def step(self, move: float) -> dict[str, pm.MarketState]:
        self.now += 12
        out = {}
        for amm in AMMS:
            self.price[amm] = int(self.price[amm] * (1 + move * self.rng.uniform(-1, 1)))
            b = isqrt(self.k[amm] * E // self.price[amm])
            q = self.k[amm] // b
            h = self.history.setdefault(amm, [pm.Snapshot(q, b, self.now - 900 - 12 * i, 1) for i in range(3, 0, -1)])
            h.append(pm.Snapshot(q, b, self.now - 1, len(h)))
            oracle = pm.div_d(q, b) * (1000 + self.rng.choice([0, 0, 30, 60, 120, -120])) // 1000
            cpf = self.rng.randint(-(10**16), 10**16)
            out[amm] = pm.MarketState(q, b, oracle, cpf, tuple(h[-80:]), self.now, twap_memo=self.memos[amm])
        return out


def random_position(rng: random.Random, price: int) -> pm.Position:
    margin = rng.randint(50, 1000) * E
    notional = margin * rng.choice([1, 2, 5, 8, 10, 11, 12, 14, 15, 20, 30, 50])
    size = notional * E // price
    return pm.Position(size if rng.random() < 0.5 else -size, margin, notional, rng.randint(-(10**16), 10**16))


def exact(a: PerpV1Adapter) -> dict[PositionKey, Evaluation]:
    """Every position through the exact maths with the per-block skip, as before the prefilter."""
    skip = a.params.mmr + 2 * 10**16  # the default prefilter_margin
    out = {}
    for (amm, t), pos in a.positions.items():
        if amm not in a.states:
            continue
        key = PositionKey(a.name, amm, t)
        out[key] = a._evaluate_one(key, pos, a.states[amm], a.info[amm], skip) or Evaluation(key, Status.HEALTHY, False)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_prefiltered_evaluation_equals_the_exact_one_block_after_block(seed):
    rng = random.Random(seed)
    a, markets = adapter(), Markets(rng)
    traders = [f"0x{i:040x}" for i in range(1, 1201)]
    for t in traders:
        amm = rng.choice(AMMS)
        a.positions[(amm, t)] = random_position(rng, markets.price[amm])
    statuses: set[str] = set()
    for blk in range(40):
        a.states = markets.step(0.004 if blk < 30 else 0.0)
        head = Block(blk, "0x", "0x", markets.now, None, 0, 0)
        got = a.evaluate(head)
        want = exact(a)
        assert len(got) == len(want) == len(a.positions)  # each position once
        assert {e.key: e for e in got} == want
        statuses |= {e.status for e in got}
        for _ in range(rng.randint(0, 30)):  # the index changes between blocks
            t = rng.choice(traders)
            amm = rng.choice(AMMS)
            r = rng.random()
            if r < 0.5:
                a.positions[(amm, t)] = random_position(rng, markets.price[amm])
            elif r < 0.9:
                a.positions.pop((amm, t), None)
            elif (amm, t) in a.positions:
                del a.positions[(amm, t)]
    assert {Status.HEALTHY, Status.PARTIAL, Status.FULL} <= statuses  # the blocks covered the cases that matter


def test_a_market_without_state_or_with_an_oracle_of_zero():
    rng = random.Random(7)
    a, markets = adapter(), Markets(rng)
    for i in range(50):
        amm = AMMS[i % 3]
        a.positions[(amm, f"0x{i + 1:040x}")] = random_position(rng, markets.price[amm])
    states = markets.step(0.0)
    m = states[AMMS[1]]
    states[AMMS[1]] = pm.MarketState(m.quote_reserve, m.base_reserve, 0, m.cpf, m.snapshots, m.now)  # oracle 0
    del states[AMMS[2]]  # its read failed this block: its positions are not evaluated
    a.states = states
    got = a.evaluate(Block(1, "0x", "0x", markets.now, None, 0, 0))
    assert {e.key.market for e in got} == {AMMS[0], AMMS[1]}
    broken = [e for e in got if e.key.market == AMMS[1]]
    assert broken and all(e.reason == "maths: underlying price is 0" for e in broken)
    assert {e.key: e for e in got} == exact(a)


def test_a_replaced_position_dict_is_followed_too():
    rng = random.Random(11)
    a, markets = adapter(), Markets(rng)
    a.positions = {(AMMS[0], f"0x{i + 1:040x}"): random_position(rng, markets.price[AMMS[0]]) for i in range(30)}
    for blk in range(3):
        a.states = markets.step(0.01)
        got = a.evaluate(Block(blk, "0x", "0x", markets.now, None, 0, 0))
        assert {e.key: e for e in got} == exact(a)
        a.positions.pop(next(iter(a.positions)))
        a.positions[(AMMS[1], f"0x{blk + 100:040x}")] = random_position(rng, markets.price[AMMS[1]])
