"""Routes without a chain: the route configuration (hops chain, 1–3 hops, indices, addresses), the LLAMMA
callback-mode settings, the Uniswap V2 output formula against a hand computation, and min_out's floor."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

import keeper.adapters  # noqa: F401 - registers the protocol kinds with keeper.config
from keeper.config import ConfigError, parse_config
from keeper.routes import Hop, RouteConfig, min_out_for, univ2_amount_out

COLL = "0x" + "c0" * 20
MID = "0x" + "d0" * 20
STABLE = "0x" + "e0" * 20
POOL_A = "0x" + "a1" * 20
POOL_B = "0x" + "b1" * 20
POOL_C = "0x" + "c1" * 20
CTRL = "0x" + "11" * 20
CTRL2 = "0x" + "22" * 20


def hop(pool: str, kind: str, i: int, j: int, tin: str, tout: str) -> dict:
    return {"pool": pool, "kind": kind, "i": i, "j": j, "token_in": tin, "token_out": tout}


def two_hops() -> list[dict]:
    return [hop(POOL_A, "curve_crypto", 1, 0, COLL, MID), hop(POOL_B, "univ2", 0, 1, MID, STABLE)]


def test_route_config_chains_and_gives_contract_tuples():
    r = RouteConfig.model_validate({"hops": two_hops()})
    hops = r.to_hops()
    assert [h.kind for h in hops] == ["curve_crypto", "univ2"]
    assert hops[0].as_tuple() == (hops[0].pool, 1, 1, 0, hops[0].token_in, hops[0].token_out)
    assert hops[1].as_tuple()[1] == 2
    assert Hop(POOL_A, "curve", 0, 1, COLL, STABLE).as_tuple()[1] == 0
    # addresses are checksummed like every address setting
    assert hops[0].pool != POOL_A and hops[0].pool.lower() == POOL_A
    assert r.token_in.lower() == COLL and r.token_out.lower() == STABLE
    # the bare list form (`routes."0x…" = [ {...}, ... ]`) is the same route
    assert RouteConfig.model_validate(two_hops()) == r
    assert r.endpoint_problem(COLL, STABLE) is None
    assert "starts at" in (r.endpoint_problem(MID, STABLE) or "")
    assert "ends at" in (r.endpoint_problem(COLL, MID) or "")


@pytest.mark.parametrize(
    ("hops", "message"),
    [
        ([], "at least 1"),
        ([hop(POOL_A, "curve", 0, 1, COLL, MID), hop(POOL_B, "curve", 0, 1, STABLE, MID)], "must chain"),
        ([hop(POOL_A, "curve", 0, 0, COLL, STABLE)], "i and j"),
        ([hop(POOL_A, "curve", 0, 1, COLL, COLL)], "same token"),
        ([hop(POOL_A, "univ2", 0, 2, COLL, STABLE)], "univ2"),
        ([hop(POOL_A, "balancer", 0, 1, COLL, STABLE)], "curve"),
        ([hop("0x1234", "curve", 0, 1, COLL, STABLE)], "address"),
        ([hop(POOL_A, "curve", -1, 1, COLL, STABLE)], "greater than or equal"),
        ([hop(POOL_A, "curve", 0, 1, COLL, MID), hop(POOL_A, "curve", 1, 2, MID, STABLE)], "twice"),
        ([hop(POOL_A, "curve", 0, 1, COLL, MID), hop(POOL_B, "curve", 0, 1, MID, COLL)], "same token twice"),
        (
            [
                hop(POOL_A, "curve", 0, 1, COLL, MID),
                hop(POOL_B, "curve", 0, 1, MID, STABLE),
                hop(POOL_C, "curve", 0, 1, STABLE, "0x" + "f0" * 20),
                hop("0x" + "f1" * 20, "curve", 0, 1, "0x" + "f0" * 20, "0x" + "f2" * 20),
            ],
            "at most 3",
        ),
    ],
)
def test_route_config_rejects(hops, message):
    with pytest.raises(ValueError, match=message):
        RouteConfig.model_validate({"hops": hops})


def test_three_hop_route_is_accepted():
    other = "0x" + "f0" * 20
    r = RouteConfig.model_validate(
        [
            hop(POOL_A, "curve", 0, 1, COLL, MID),
            hop(POOL_B, "univ2", 1, 0, MID, other),
            hop(POOL_C, "curve_crypto", 2, 0, other, STABLE),
        ]
    )
    assert len(r.to_hops()) == 3


# ---- the llamma protocol's callback settings -----------------------------------------------------------


def config(**llamma) -> dict:
    protocol = {"kind": "llamma", "name": "crvusd", "controllers": [CTRL], **llamma}
    return {
        "chain": {"rpc_urls": ["http://127.0.0.1:8545"], "chain_id": 31337},
        "pricing": {"source": "fixed", "value": "3000"},
        "state": {"path": ":memory:"},
        "protocols": [protocol],
    }


def test_llamma_defaults_to_inventory_mode():
    p = parse_config(config(), environ={}).protocols[0]
    assert p.mode == "inventory" and p.liquidator is None and p.routes == {} and p.route_slippage == Decimal("0.005")


def test_llamma_callback_mode_from_toml():
    text = f"""
[chain]
rpc_urls = ["http://127.0.0.1:8545"]
chain_id = 31337
[pricing]
source = "fixed"
value = "3000"
[state]
path = ":memory:"
[[protocols]]
kind = "llamma"
name = "crvusd"
controllers = ["{CTRL}"]
mode = "callback"
liquidator = "{POOL_C}"
route_slippage = "0.01"
[protocols.routes."{CTRL}"]
hops = [
  {{ pool = "{POOL_A}", kind = "curve", i = 1, j = 0, token_in = "{COLL}", token_out = "{MID}" }},
  {{ pool = "{POOL_B}", kind = "univ2", i = 1, j = 0, token_in = "{MID}", token_out = "{STABLE}" }},
]
"""
    p = parse_config(tomllib.loads(text), environ={}).protocols[0]
    assert p.mode == "callback" and p.route_slippage == Decimal("0.01")
    (controller,) = p.routes  # keyed by the checksummed controller address
    assert controller.lower() == CTRL and controller == p.controllers[0]
    assert [h.as_tuple()[1] for h in p.routes[controller].to_hops()] == [0, 2]


@pytest.mark.parametrize(
    ("llamma", "field", "message"),
    [
        ({"mode": "callback", "routes": {CTRL: two_hops()}}, "protocols[0]", "needs liquidator"),
        ({"mode": "callback", "liquidator": POOL_C}, "protocols[0]", "needs routes"),
        (
            {"mode": "callback", "liquidator": POOL_C, "controllers": [CTRL, CTRL2], "routes": {CTRL: two_hops()}},
            "protocols[0]",
            "no route for controller",
        ),
        ({"routes": {CTRL2: two_hops()}}, "protocols[0]", "not one of `controllers`"),
        ({"routes": {"0x12": two_hops()}}, "protocols[0].routes", "address"),
        ({"routes": {CTRL: [hop(POOL_A, "curve", 0, 0, COLL, STABLE)]}}, "protocols[0].routes", "i and j"),
        ({"mode": "auction"}, "protocols[0].mode", "inventory"),
        ({"route_slippage": "1.5"}, "protocols[0].route_slippage", "between 0 and 1"),
    ],
)
def test_llamma_callback_settings_errors_name_the_field(llamma, field, message):
    with pytest.raises(ConfigError) as err:
        parse_config(config(**llamma), environ={})
    assert err.value.field.startswith(field), err.value.field
    assert message in err.value.message


def test_callback_mode_with_a_factory_needs_routes_only_for_some_markets():
    cfg = config(mode="callback", liquidator=POOL_C, factory=CTRL2, controllers=[], routes={CTRL: two_hops()})
    p = parse_config(cfg, environ={}).protocols[0]
    assert p.factory is not None and len(p.routes) == 1  # a factory's markets are known only at start


# ---- maths ------------------------------------------------------------------------------------------------


def test_univ2_amount_out_matches_a_hand_computation():
    # 1 token in, reserves 100 / 200_000 (18 decimals):
    # out = 1e18·997·200_000e18 / (100e18·1000 + 1e18·997)
    amount, r_in, r_out = 10**18, 100 * 10**18, 200_000 * 10**18
    num = 997 * 10**18 * 200_000 * 10**18
    den = 100 * 10**18 * 1000 + 997 * 10**18
    assert univ2_amount_out(amount, r_in, r_out) == num // den == 1974316068794122597700  # 1974.3160687941225977 stablecoin
    # small numbers, by hand: 10·997 = 9970; 9970·50 = 498500; 100·1000 + 9970 = 109970; ⌊498500 / 109970⌋ = 4
    assert univ2_amount_out(10, 100, 50) == 4
    assert univ2_amount_out(0, 100, 50) == 0
    assert univ2_amount_out(10, 0, 50) == 0
    assert univ2_amount_out(10, 100, 0) == 0
    # never the whole reserve, whatever the input
    assert univ2_amount_out(10**40, 10, 1000) == 999


def test_chained_univ2_quotes_feed_each_hop_the_previous_output():
    r1 = (5_000 * 10**8, 4_000_000 * 10**18)  # 8-decimal collateral → MID
    r2 = (10_000_000 * 10**18, 9_990_000 * 10**18)  # MID → stablecoin
    first = univ2_amount_out(3 * 10**8, *r1)
    second = univ2_amount_out(first, *r2)
    assert first == 3 * 10**8 * 997 * r1[1] // (r1[0] * 1000 + 3 * 10**8 * 997)
    assert second == first * 997 * r2[1] // (r2[0] * 1000 + first * 997)
    assert second < first  # each hop pays its fee


def test_min_out_is_the_floor():
    assert min_out_for(1000, Decimal("0.005")) == 995
    assert min_out_for(999, Decimal("0.005")) == 994  # 994.005 floored
    assert min_out_for(10**30 + 1, Decimal("0.001")) == (10**30 + 1) * 999 // 1000
    assert min_out_for(12345, Decimal(0)) == 12345
    assert min_out_for(12345, Decimal(1)) == 0
    assert min_out_for(0, Decimal("0.01")) == 0
    with pytest.raises(ValueError):
        min_out_for(100, Decimal("1.01"))
