"""Gas costs converted at a live on-chain price (Chainlink-compatible feed); a stale feed stops sends."""

from __future__ import annotations

import pytest

from keeper.devtools.perp_env import BUY
from tests.harness import KEEPER, keeper_config, perp_protocol, start_engine, step

pytestmark = pytest.mark.chain
E = 10**18


async def test_chainlink_price_drives_cost_and_stale_feed_blocks_sends(perp, accounts, tmp_path):
    alice, whale = accounts["alice"], accounts["whale"]
    perp.fund_trader(alice, 301 * E)
    perp.open_position(alice, "ETH", BUY, 300 * E, 10 * E)
    perp.set_oracle_price("ETH", 2880 * E)
    perp.move_spot_price("ETH", 2880 * E, whale)
    perp.advance_twap(900)
    feed = perp.chain.deploy("common/ChainlinkAggregator", 8, "ETH / USD", 3000 * 10**8)
    pricing = {"source": "chainlink", "feed": feed.address, "max_age": 600}
    # stale: the answer is older than max_age → no price → nothing sent
    perp.chain.advance(700)
    nonce0 = perp.chain.nonce(KEEPER)
    engine, log = await start_engine(keeper_config(perp.chain.url, tmp_path / "a.sqlite", [perp_protocol(perp)], pricing=pricing))
    try:
        await step(engine)
    finally:
        await engine.close()
    assert perp.chain.nonce(KEEPER) == nonce0
    assert any(r["reason"] == "no_native_price" and "stale" in r["error"] for r in log.events("liquidation_skipped"))
    # fresh answer: cost = gas × fee per gas × 3,000 (the feed, 8 decimals)
    perp.chain.tx(feed.functions.set_answer(3000 * 10**8))
    engine, log = await start_engine(keeper_config(perp.chain.url, tmp_path / "b.sqlite", [perp_protocol(perp)], pricing=pricing))
    try:
        await step(engine)
    finally:
        await engine.close()
    (sent,) = log.events("liquidation_sent")
    assert sent["native_price"] == 3000 * E
    assert sent["est_cost"] == -(-sent["gas"] * sent["fee_per_gas"] * 3000 * E // E)
