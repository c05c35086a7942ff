"""The race benchmark's rival (keeper/devtools/plainbot.py) on a real anvil: it finds positions from
events, liquidates crashed perp positions and hard-liquidatable LLAMMA loans on its own, approving the
controller in the same block as its first paying liquidation."""

from __future__ import annotations

import asyncio
import time

import pytest

from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS
from keeper.devtools.chain import DevChain
from keeper.devtools.llamma_env import MAX_UINT256, deploy_llamma
from keeper.devtools.perp_env import BUY, deploy_perp
from keeper.devtools.plainbot import PlainBot
from tests.conftest import start_anvil

pytestmark = [pytest.mark.chain]
E = 10**18
BOT_KEY, BOT = ANVIL_KEYS[8], ANVIL_ADDRESSES[8]


async def wait_mined(bot: PlainBot, timeout: float = 20.0) -> None:
    """Automining anvil answers a send before it has mined it: wait (bounded) for an empty pool."""
    deadline = time.monotonic() + timeout
    while int((await bot.rpc.request("txpool_status"))["pending"], 16):
        assert time.monotonic() < deadline, "anvil did not mine the bot's transactions"
        await asyncio.sleep(0.01)


async def drive(bot: PlainBot, rounds: int = 30) -> list:
    """Run the bot's per-head step until nothing is liquidatable and nothing is in flight."""
    await bot.start()
    reports = []
    try:
        for _ in range(rounds):
            head = await bot.rpc.block_number()
            rep = await bot.on_head(head, time.monotonic())
            reports.append(rep)
            await wait_mined(bot)
            if rep.liquidatable == 0 and not bot.in_flight:
                break
        else:
            raise AssertionError(f"the bot kept finding liquidatable positions: {reports}")
    finally:
        await bot.close()
    return reports


def test_plain_bot_liquidates_perp_and_llamma_alone():
    node = start_anvil(accounts=30)
    try:
        chain = DevChain(node.url)
        acc = chain.w3.eth.accounts
        perp = deploy_perp(chain)
        traders = acc[10:13]
        for t in traders:
            perp.fund_trader(t, 301 * E)
            perp.open_position(t, "ETH", BUY, 300 * E, 10 * E)
        crv = deploy_llamma(chain, variant="m2")
        borrowers = acc[14:20]
        for i, u in enumerate(borrowers):
            n, col = 4 + i % 4, crv.units(5 + i)
            crv.create_loan(u, col, crv.max_borrowable(col, n) * (85 + i) // 100, n)
        crv.fund_stablecoin(BOT, crv.usd(10**6))
        start = chain.block_number()
        # the crash: ETH −8 % on both index and vAMM (TWAP caught up), the LLAMMA oracle −12 % then a 5 % gap
        perp.set_oracle_price("ETH", 2760 * E)
        perp.move_spot_price("ETH", 2760 * E, acc[25])
        perp.advance_twap(900)
        crv.lower_price_in_steps(crv.oracle_price() * 88 // 100, 6, acc[26])
        crv.set_oracle_price(crv.oracle_price() * 95 // 100)
        loans = [u for u, *_ in crv.controller.functions.users_to_liquidate().call()]
        assert loans, "the scenario must leave hard-liquidatable loans"
        assert crv.stablecoin.functions.allowance(BOT, crv.controller.address).call() == 0

        bot = PlainBot(node.url, BOT_KEY, clearing_houses=[perp.clearing_house.address], controllers=[crv.controller.address])
        reports = asyncio.run(drive(bot))

        # found from PositionChanged / Borrow logs: the traders, the whale that moved the vAMM, the borrowers
        assert {t.account for t in bot.known.values()} == {*traders, acc[25], *borrowers}
        assert reports[0].sent >= len(traders) + len(loans) and reports[0].approvals == 1
        perp_liq = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=start)
        assert {e["args"]["trader"] for e in perp_liq} == set(traders)
        assert {e["args"]["liquidator"] for e in perp_liq} == {BOT}
        llamma_liq = crv.controller.events.Liquidate.get_logs(from_block=start)
        assert {e["args"]["user"] for e in llamma_liq} == set(loans)
        assert {e["args"]["liquidator"] for e in llamma_liq} == {BOT}
        assert crv.controller.functions.users_to_liquidate().call() == []
        assert crv.stablecoin.functions.allowance(BOT, crv.controller.address).call() > MAX_UINT256 // 2
        assert bot.reverted == 0 and bot.landed == chain.nonce(BOT)
    finally:
        node.stop()
