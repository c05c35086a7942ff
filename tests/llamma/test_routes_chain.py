"""keeper.routes on a real anvil chain with the reference pools (contracts/pools/): the quote of a route by
eth_call equals what the pools actually pay when a trader swaps along it (Curve stableswap and cryptoswap
ABIs, a Uniswap V2 pair, and 2–3 hop routes mixing them); a pair pays the quote and refuses one unit more;
quotes are pinned to their block; many amounts cost one batch per Curve hop; a misconfigured hop raises."""

from __future__ import annotations

import pytest
from web3 import Web3

from keeper.devtools.chain import DevChain, TxFailed
from keeper.devtools.pools import (
    KIND_CRYPTOSWAP,
    KIND_STABLESWAP,
    KIND_UNIV2,
    curve_hop,
    deploy_curve_pool,
    deploy_univ2_pair,
    fund_token,
    univ2_hop,
)
from keeper.devtools.pools import Hop as PoolHop
from keeper.routes import KIND_CODES, Hop, RouteError, quote_curve, quote_route
from keeper.rpc import RpcClient

pytestmark = pytest.mark.chain

KINDS = {code: kind for kind, code in KIND_CODES.items()}


def test_hop_kind_codes_are_the_contracts():
    assert KIND_CODES == {"curve": KIND_STABLESWAP, "curve_crypto": KIND_CRYPTOSWAP, "univ2": KIND_UNIV2}


E6, E8, E18 = 10**6, 10**8, 10**18


def route_of(*hops: PoolHop) -> list[Hop]:
    return [Hop(h.pool, KINDS[h.kind], h.i, h.j, h.token_in, h.token_out) for h in hops]  # type: ignore[arg-type]


class World:
    def __init__(self, chain: DevChain):
        self.chain = chain
        self.coll = chain.deploy("common/ERC20", "Wrapped BTC", "WBTC", 8)
        self.mid = chain.deploy("common/ERC20", "Wrapped Ether", "WETH", 18)
        self.usdc = chain.deploy("common/ERC20", "USD Coin", "USDC", 6)
        self.stable = chain.deploy("common/ERC20", "Curve USD", "crvUSD", 18)
        # prices: 1 coll = 60,000 stable, 1 mid = 3,000 stable, 1 coll = 20 mid
        self.stable_pool = deploy_curve_pool(chain, self.coll, self.stable, kind="stable", amounts=(100 * E8, 6_000_000 * E18))
        self.crypto_pool = deploy_curve_pool(chain, self.mid, self.stable, kind="crypto", amounts=(2_000 * E18, 6_000_000 * E18))
        self.pair = deploy_univ2_pair(chain, self.coll, self.mid, amounts=(50 * E8, 1_000 * E18))
        self.pair_stable = deploy_univ2_pair(chain, self.coll, self.stable, amounts=(40 * E8, 2_400_000 * E18))
        self.thin_pool = deploy_curve_pool(chain, self.coll, self.stable, kind="crypto", amounts=(1 * E8, 60_000 * E18))
        self.crypto_usdc = deploy_curve_pool(chain, self.mid, self.usdc, kind="crypto", amounts=(2_000 * E18, 6_000_000 * E6))
        self.usdc_pool = deploy_curve_pool(
            chain, self.usdc, self.stable, kind="stable", amounts=(9_000_000 * E6, 9_000_000 * E18)
        )

    def routes(self) -> dict[str, list[Hop]]:
        c = self.chain
        coll, mid, stable = self.coll, self.mid, self.stable
        return {
            "curve": route_of(curve_hop(c, self.stable_pool, coll, stable)),
            "curve_crypto": route_of(curve_hop(c, self.thin_pool, coll, stable)),
            "univ2": route_of(univ2_hop(self.pair_stable, coll, stable)),
            "univ2+crypto": route_of(univ2_hop(self.pair, coll, mid), curve_hop(c, self.crypto_pool, mid, stable)),
            "univ2+crypto+stable": route_of(
                univ2_hop(self.pair, coll, mid),
                curve_hop(c, self.crypto_usdc, mid, self.usdc),
                curve_hop(c, self.usdc_pool, self.usdc, stable),
            ),
        }


@pytest.fixture(scope="module")
def world(module_anvil) -> World:
    return World(DevChain(module_anvil.url))


@pytest.fixture
def fresh(world):
    with world.chain.reverted():
        yield world


@pytest.fixture
async def rpc(module_anvil):
    client = await RpcClient([module_anvil.url]).start()
    try:
        yield client
    finally:
        await client.close()


def token(chain: DevChain, address: str):
    return chain.at("common/ERC20", address)


def swap_along(chain: DevChain, trader: str, route: list[Hop], amount: int) -> int:
    """Swap `amount` along the route as `trader`, one real transaction per hop; what the trader received
    of the last token."""
    out_token = token(chain, route[-1].token_out)
    before = out_token.functions.balanceOf(trader).call()
    dx = amount
    for h in route:
        t_in, t_out = token(chain, h.token_in), token(chain, h.token_out)
        got_before = t_out.functions.balanceOf(trader).call()
        if h.kind == "univ2":
            pair = chain.at("pools/UniV2Pair", h.pool)
            r0, r1, _ = pair.functions.getReserves().call()
            r_in, r_out = (r0, r1) if h.i == 0 else (r1, r0)
            out = dx * 997 * r_out // (r_in * 1000 + dx * 997)
            chain.tx(t_in.functions.transfer(h.pool, dx), sender=trader)
            chain.tx(pair.functions.swap(*((0, out) if h.i == 0 else (out, 0)), trader, b""), sender=trader)
        else:
            name = "pools/CurveStablePool" if h.kind == "curve" else "pools/CurveCryptoPool"
            pool = chain.at(name, h.pool)
            chain.tx(t_in.functions.approve(h.pool, dx), sender=trader)
            chain.tx(pool.functions.exchange(h.i, h.j, dx, 0), sender=trader)
        dx = t_out.functions.balanceOf(trader).call() - got_before
    return out_token.functions.balanceOf(trader).call() - before


@pytest.mark.parametrize("name", ["curve", "curve_crypto", "univ2", "univ2+crypto", "univ2+crypto+stable"])
async def test_quote_equals_what_the_route_pays(fresh, rpc, name):
    w = fresh
    route = w.routes()[name]
    trader = w.chain.accounts[5]
    amount = 3 * E8 // 10 if name != "curve_crypto" else E8 // 10  # 0.3 coll (0.1 on the thin pool)
    fund_token(w.chain, route[0].token_in, trader, amount)
    head = await rpc.block_number()
    quoted = await quote_route(rpc, route, amount, head)
    assert quoted > 0
    paid = swap_along(w.chain, trader, route, amount)
    assert paid == quoted, (name, paid, quoted)


async def test_a_pair_pays_the_quote_and_not_one_unit_more(fresh, rpc):
    w = fresh
    (h,) = w.routes()["univ2"]
    trader = w.chain.accounts[5]
    amount = 7 * E8 // 10
    fund_token(w.chain, h.token_in, trader, amount)
    quoted = await quote_route(rpc, [h], amount, "latest")
    pair = w.chain.at("pools/UniV2Pair", h.pool)
    w.chain.tx(token(w.chain, h.token_in).functions.transfer(h.pool, amount), sender=trader)
    outs = lambda n: (0, n) if h.i == 0 else (n, 0)  # noqa: E731
    with pytest.raises(TxFailed):
        w.chain.tx(pair.functions.swap(*outs(quoted + 1), trader, b""), sender=trader, gas=300_000)
    w.chain.tx(pair.functions.swap(*outs(quoted), trader, b""), sender=trader)
    assert token(w.chain, h.token_out).functions.balanceOf(trader).call() == quoted


async def test_quotes_are_pinned_to_their_block(fresh, rpc):
    w = fresh
    route = w.routes()["univ2+crypto"]
    amount = E8
    block = await rpc.block_number()
    before = await quote_route(rpc, route, amount, block)
    # another account sells into both pools: the head's quote drops, the old block's does not move
    other = w.chain.accounts[6]
    fund_token(w.chain, route[0].token_in, other, 5 * E8)
    swap_along(w.chain, other, route, 5 * E8)
    assert await quote_route(rpc, route, amount, "latest") < before
    assert await quote_route(rpc, route, amount, block) == before


async def test_many_amounts_cost_one_batch_per_hop_that_needs_the_previous_output(fresh, rpc):
    w = fresh
    routes = w.routes()
    amounts = [0, 1, E8 // 100, E8 // 10, E8, 3 * E8, 10 * E8]
    head = await rpc.block_number()
    # round trips: one batch (token checks, reserves, a first Curve hop) + one per later Curve hop
    for name, batches in (("univ2", 1), ("curve", 1), ("univ2+crypto", 2), ("univ2+crypto+stable", 3)):
        route = routes[name]
        singles = [await quote_route(rpc, route, a, head) for a in amounts]
        requests = rpc.stats.http_requests
        quotes = await quote_curve(rpc, route, amounts, head)
        assert rpc.stats.http_requests - requests == batches, name
        assert quotes == singles, name
        assert quotes[0] == 0 and all(q > 0 for q in quotes[1:] if q), name
        assert quotes[1:] == sorted(quotes[1:]), name  # more in, more out (never less)
    requests = rpc.stats.http_requests
    assert await quote_route(rpc, routes["curve"], 0, head) == 0
    assert rpc.stats.http_requests == requests  # nothing to ask for 0


async def test_a_thin_pool_quotes_far_below_a_deep_one(fresh, rpc):
    w = fresh
    routes = w.routes()
    amount = 2 * E8  # twice the thin pool's collateral
    deep = await quote_route(rpc, routes["curve"], amount, "latest")
    thin = await quote_route(rpc, routes["curve_crypto"], amount, "latest")
    assert deep > 100_000 * E18  # ≈ 2 × 60,000 less price impact
    assert thin < 60_000 * E18 < deep  # never more than the thin pool holds


async def test_a_hop_whose_pool_holds_other_tokens_raises(fresh, rpc):
    w = fresh
    (h,) = w.routes()["curve"]
    swapped = Hop(h.pool, h.kind, h.j, h.i, h.token_in, h.token_out)  # indices the wrong way round
    with pytest.raises(RouteError, match="coins"):
        await quote_route(rpc, [swapped], E8, "latest")
    (p,) = w.routes()["univ2"]
    wrong_side = Hop(p.pool, "univ2", 1 - p.i, p.i, p.token_in, p.token_out)
    with pytest.raises(RouteError, match="token0"):
        await quote_route(rpc, [wrong_side], E8, "latest")
    as_pair = Hop(h.pool, "univ2", 0, 1, h.token_in, h.token_out)  # a Curve pool has no token0()
    with pytest.raises(RouteError):
        await quote_route(rpc, [as_pair], E8, "latest")
    nowhere = Hop(Web3.to_checksum_address("0x" + "42" * 20), "curve", 0, 1, h.token_in, h.token_out)
    with pytest.raises(RouteError):
        await quote_route(rpc, [nowhere], E8, "latest")
