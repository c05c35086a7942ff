"""The rival watch (keeper/mempool.py) on a real anvil with automining off: another sender's pending
`liquidate(amm, trader)` is found for its position with its hash, sender and effective tip, through
`txpool_content` and through the pending-transaction filter; the keeper's own pending liquidation and a
plain transfer are ignored; a node that refuses both methods turns the watch off (logged once). The
refusals come from a loopback JSON-RPC proxy that answers "method not found" for the named methods and
forwards everything else to anvil."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import PerpDeployment, deploy_perp
from keeper.gas import next_base_fee
from keeper.mempool import RivalWatch, effective_tip
from keeper.types import Block, PositionKey
from tests.harness import KEEPER, RecordingLog, open_adapter, perp_protocol

pytestmark = pytest.mark.chain
GWEI = 10**9


@pytest.fixture(scope="module")
def deployment(module_anvil) -> PerpDeployment:
    return deploy_perp(DevChain(module_anvil.url))


@pytest.fixture
def perp(deployment):
    """Automining off for the test; every pending transaction dropped and the chain reverted afterwards."""
    with deployment.chain.reverted():
        yield deployment
        deployment.chain.rpc("anvil_dropAllTransactions")


@pytest.fixture
async def adapter(perp):
    a, rpc, _head = await open_adapter(perp.chain.url, perp_protocol(perp))
    perp.chain.set_automine(False)
    try:
        yield a
    finally:
        await rpc.close()


def liquidate_data(perp: PerpDeployment, market: str, trader: str) -> str:
    return perp.clearing_house.functions.liquidate(perp.amm(market).address, trader)._encode_transaction_data()


def send_pending(chain: DevChain, sender: str, to: str, data: str, *, tip: int = 0, max_fee: int = 0, gas_price: int = 0) -> str:
    """eth_sendTransaction from an unlocked account with explicit gas and fees (no estimation: a
    liquidation of a healthy trader would not estimate); with automining off it stays pending."""
    tx = {"from": sender, "to": to, "data": data, "gas": hex(600_000)}
    if gas_price:
        tx["gasPrice"] = hex(gas_price)
    else:
        tx.update(maxFeePerGas=hex(max_fee), maxPriorityFeePerGas=hex(tip))
    return chain.rpc("eth_sendTransaction", [tx])


async def head_of(rpc) -> Block:
    return Block.from_rpc(await rpc.get_block("latest"))


def next_base(head: Block) -> int:
    assert head.base_fee is not None
    return next_base_fee(head.base_fee, head.gas_used, head.gas_limit)


class RefusingProxy:
    """Loopback JSON-RPC proxy: "method not found" for `refused`, everything else forwarded to `upstream`."""

    def __init__(self, upstream: str, refused: set[str]):
        self.upstream, self.refused = upstream, refused
        self.asked: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        items = payload if isinstance(payload, list) else [payload]
        out = []
        async with aiohttp.ClientSession() as s:
            for item in items:
                self.asked.append(item["method"])
                if item["method"] in self.refused:
                    err = {"code": -32601, "message": f"the method {item['method']} does not exist/is not available"}
                    out.append({"jsonrpc": "2.0", "id": item["id"], "error": err})
                else:
                    async with s.post(self.upstream, json=item) as resp:
                        out.append(await resp.json(content_type=None))
        return web.json_response(out if isinstance(payload, list) else out[0])

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


def scene(perp: PerpDeployment) -> dict:
    """Pending transactions: two rivals for alice's ETH position (2 and 3 gwei tip), one legacy rival for
    carol's BTC position, the keeper's own liquidation of alice at 9 gwei, a 50-gwei-tip plain transfer."""
    chain, ch = perp.chain, perp.clearing_house.address
    a = chain.accounts
    alice, carol, rival1, rival2, rival3, stranger = a[1], a[3], a[5], a[6], a[7], a[8]
    max_fee = 500 * GWEI
    return {
        "alice": alice,
        "carol": carol,
        "rival1": rival1,
        "rival2": rival2,
        "rival3": rival3,
        "low": send_pending(chain, rival1, ch, liquidate_data(perp, "ETH", alice), tip=2 * GWEI, max_fee=max_fee),
        "high": send_pending(chain, rival2, ch, liquidate_data(perp, "ETH", alice), tip=3 * GWEI, max_fee=max_fee),
        "legacy": send_pending(chain, rival3, ch, liquidate_data(perp, "BTC", carol), gas_price=40 * GWEI),
        "own": send_pending(chain, KEEPER, ch, liquidate_data(perp, "ETH", alice), tip=9 * GWEI, max_fee=max_fee),
        "transfer": send_pending(chain, stranger, alice, "0x", tip=50 * GWEI, max_fee=max_fee),
    }


def assert_scene(perp: PerpDeployment, watch: RivalWatch, s: dict, head: Block) -> None:
    eth_key = PositionKey("perp", perp.amm("ETH").address, s["alice"])
    btc_key = PositionKey("perp", perp.amm("BTC").address, s["carol"])
    r = watch.rival(eth_key)
    assert r is not None
    assert (r.tx_hash, r.sender, r.tip, r.max_fee, r.key) == (s["high"], s["rival2"].lower(), 3 * GWEI, 500 * GWEI, eth_key)
    legacy = watch.rival(btc_key)
    assert legacy is not None and legacy.tx_hash == s["legacy"] and legacy.sender == s["rival3"].lower()
    assert legacy.tip == 40 * GWEI - next_base(head) and legacy.max_fee == 40 * GWEI
    # the keeper's own 9-gwei liquidation and the 50-gwei transfer are not rivals
    assert set(watch.rivals()) == {eth_key, btc_key}
    assert all(x.tx_hash not in (s["own"], s["transfer"]) for x in watch.rivals().values())


async def test_txpool_content_finds_the_highest_rival_and_ignores_ours_and_transfers(perp, adapter):
    rpc = adapter.ctx.rpc
    log = RecordingLog()
    watch = RivalWatch(rpc, KEEPER, [adapter], log)
    s = scene(perp)
    head = await head_of(rpc)
    calls = rpc.stats.calls
    await watch.refresh(head)
    assert rpc.stats.calls - calls == 1 and rpc.stats.by_method["txpool_content"] == 1  # one call per head
    assert watch.available and watch.mode == "txpool" and watch.head == head.number and watch.seen == 5
    assert_scene(perp, watch, s, head)
    # an adapter naming its liquidation selectors lets the watch skip other calls on a string compare
    adapter.liquidation_selectors = frozenset({bytes.fromhex(liquidate_data(perp, "ETH", s["alice"])[2:10])})
    quick = RivalWatch(rpc, KEEPER, [adapter], log)
    await quick.refresh(head)
    assert_scene(perp, quick, s, head)
    # mined: no rivals left
    perp.chain.mine()
    await watch.refresh(await head_of(rpc))
    assert watch.rivals() == {}
    assert not log.events("mempool_watch_unavailable") and not log.events("mempool_watch_failed")


async def test_effective_tip_is_capped_by_the_max_fee_and_the_next_base_fee(perp, adapter):
    rpc = adapter.ctx.rpc
    watch = RivalWatch(rpc, KEEPER, [adapter], RecordingLog())
    perp.chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(20 * GWEI)])
    perp.chain.mine()
    head = await head_of(rpc)
    nb = next_base(head)
    assert head.base_fee == 20 * GWEI and nb < head.base_fee  # an empty block: the next base fee falls
    alice, a = perp.chain.accounts[1], perp.chain.accounts
    ch, data = perp.clearing_house.address, liquidate_data(perp, "ETH", alice)
    capped = send_pending(perp.chain, a[5], ch, data, tip=5 * GWEI, max_fee=nb + GWEI)
    await watch.refresh(head)
    r = watch.rival(PositionKey("perp", perp.amm("ETH").address, alice))
    assert r is not None and r.tx_hash == capped and r.tip == GWEI  # min(tip, max fee − next base fee)


def test_effective_tip_rules():
    """(anvil evicts a transaction that cannot pay the base fee, so this edge is checked on dicts)"""
    eip1559 = {"maxFeePerGas": hex(30 * GWEI), "maxPriorityFeePerGas": hex(2 * GWEI), "gasPrice": hex(30 * GWEI)}
    assert effective_tip(eip1559, 10 * GWEI) == (2 * GWEI, 30 * GWEI)
    assert effective_tip(eip1559, 29 * GWEI) == (GWEI, 30 * GWEI)
    assert effective_tip(eip1559, 30 * GWEI + 1) is None  # cannot pay the next base fee: not a rival
    assert effective_tip(eip1559, None) == (2 * GWEI, 30 * GWEI)
    legacy = {"gasPrice": hex(40 * GWEI)}
    assert effective_tip(legacy, 15 * GWEI) == (25 * GWEI, 40 * GWEI)
    assert effective_tip(legacy, None) == (40 * GWEI, 40 * GWEI)
    assert effective_tip(legacy, 41 * GWEI) is None


async def test_filter_mode_sees_what_arrives_after_the_filter_and_follows_it_until_mined(perp, adapter):
    rpc = adapter.ctx.rpc
    watch = RivalWatch(rpc, KEEPER, [adapter], RecordingLog(), method="filter")
    await watch.refresh(await head_of(rpc))  # creates the filter
    assert watch.available and watch.rivals() == {}
    s = scene(perp)
    head = await head_of(rpc)
    await watch.refresh(head)
    assert watch.seen == 5
    assert_scene(perp, watch, s, head)
    # the filter reports each hash once: the next refresh still knows the rivals (looked up by hash)
    await watch.refresh(head)
    assert_scene(perp, watch, s, head)
    perp.chain.mine()
    await watch.refresh(await head_of(rpc))
    assert watch.rivals() == {}


async def test_auto_falls_back_to_the_filter_when_txpool_is_refused(perp, adapter):
    from keeper.rpc import RpcClient

    proxy = RefusingProxy(perp.chain.url, {"txpool_content"})
    async with proxy as url:
        rpc = await RpcClient([url]).start()
        try:
            log = RecordingLog()
            watch = RivalWatch(rpc, KEEPER, [adapter], log)
            await watch.refresh(await head_of(rpc))  # refused → filter created
            assert watch.mode == "filter" and watch.available
            (fallback,) = log.events("mempool_watch_fallback")
            assert "txpool_content" in fallback["reason"]
            s = scene(perp)
            head = await head_of(rpc)
            await watch.refresh(head)
            assert_scene(perp, watch, s, head)
            assert proxy.asked.count("txpool_content") == 1
        finally:
            await rpc.close()


async def test_a_node_without_either_method_turns_the_watch_off_once(perp, adapter):
    from keeper.rpc import RpcClient

    proxy = RefusingProxy(perp.chain.url, {"txpool_content", "eth_newPendingTransactionFilter"})
    async with proxy as url:
        rpc = await RpcClient([url]).start()
        try:
            log = RecordingLog()
            watch = RivalWatch(rpc, KEEPER, [adapter], log)
            scene(perp)
            for _ in range(3):
                await watch.refresh(await head_of(rpc))
            assert not watch.available and watch.rivals() == {}
            assert len(log.events("mempool_watch_unavailable")) == 1
            assert proxy.asked.count("txpool_content") == 1 and proxy.asked.count("eth_newPendingTransactionFilter") == 1
        finally:
            await rpc.close()
