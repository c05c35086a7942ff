"""The keeper against the reference LLAMMA contracts (M2 and V3 ABIs, 18- and 8-decimal
collateral): soft liquidation left alone, hard liquidation exactly when health(user, True) < 0,
payouts by balance, partial frac, unprofitable skips, min_x slippage, local figures vs views."""

from __future__ import annotations

import pytest

from keeper.devtools.chain import DevChain
from keeper.devtools.llamma_env import LlammaDeployment, deploy_llamma
from keeper.risk import llamma as lm
from tests.conftest import start_anvil
from tests.harness import KEEPER, keeper_config, open_adapter, run_engine, settle_pool, start_engine, step

pytestmark = pytest.mark.chain
E = 10**18
VARIANTS = {"m2": dict(variant="m2", collateral_decimals=18), "v3": dict(variant="v3", collateral_decimals=8)}


def llamma_protocol(m: LlammaDeployment, **kw) -> dict:
    return {"kind": "llamma", "name": "crv", "factory": m.factory.address, "start_block": 0, **kw}


@pytest.fixture(scope="module")
def wide_chain():
    """A module anvil with 30 funded accounts (16 borrowers, an arbitrageur, the keeper)."""
    node = start_anvil(accounts=30)
    try:
        yield DevChain(node.url)
    finally:
        node.stop()


@pytest.fixture(scope="module", params=list(VARIANTS))
def soft_world(request, wide_chain: DevChain):
    """16 loans (N = 4…11 bands, 80–95 % of max LTV); the oracle lowered 12 % in 6 steps with
    arbitrage after each (soft liquidation). Returns (market, borrowers, arbitrageur)."""
    chain = wide_chain
    with chain.reverted():
        m = deploy_llamma(chain, **VARIANTS[request.param])
        users = [a for a in chain.w3.eth.accounts[10:26]]
        for i, u in enumerate(users):
            n, col = 4 + i % 8, m.units(5 + i)
            m.create_loan(u, col, m.max_borrowable(col, n) * (80 + i) // 100, n)
        arb = chain.w3.eth.accounts[27]
        m.lower_price_in_steps(m.oracle_price() * 88 // 100, 6, arb)
        yield m, users, arb


@pytest.fixture
def world(soft_world, wide_chain):
    with wide_chain.reverted():
        yield soft_world


def sharp_step(m: LlammaDeployment, percent: int) -> None:
    m.set_oracle_price(m.oracle_price() * (100 - percent) // 100)
    m.chain.mine()


def utl(m: LlammaDeployment) -> set[str]:
    return {row[0] for row in m.controller.functions.users_to_liquidate().call()}


async def run_keeper(m, tmp_path, blocks: int = 3, **over):
    cfg = keeper_config(m.chain.url, tmp_path / "k.sqlite", [llamma_protocol(m, **over.pop("protocol", {}))], **over)
    return await run_engine(cfg, blocks)


async def test_scenario_liquidates_exactly_users_to_liquidate_and_leaves_soft_loans(world, tmp_path):
    m, users, _arb = world
    active = m.amm.functions.active_band().call()
    soft_healthy = [u for u in users if m.user_bands(u)[0] <= active and m.health(u, True) >= 0]
    assert soft_healthy, "the scenario must have loans in soft liquidation with health ≥ 0"
    sharp_step(m, 5)
    expected = utl(m)
    assert 0 < len(expected) < len(users)
    untouched = {u: m.controller.functions.user_state(u).call() for u in users if u not in expected}
    rows0 = {r[0]: r for r in m.controller.functions.users_to_liquidate().call()}
    m.fund_stablecoin(KEEPER, m.usd(10**6))
    # The keeper's liquidatable set is exactly the protocol's.
    adapter, rpc, head = await open_adapter(m.chain.url, llamma_protocol(m))
    try:
        assert {k[1] for k in adapter.liquidatable} == expected
        assert all(m.health(u, True) < 0 for u in expected)
    finally:
        await rpc.close()
    _engine, log = await run_keeper(m, tmp_path, blocks=4)
    assert utl(m) == set()
    landed = log.events("liquidation_landed")
    assert {r["account"] for r in landed} == expected
    for u in expected:
        assert not m.controller.functions.loan_exists(u).call()
    for u, state in untouched.items():  # soft-liquidated (health ≥ 0) and healthy loans: not touched
        assert m.controller.functions.user_state(u).call() == state
    # estimated == realised per liquidation (no interest accrues between estimate and execution);
    # AMM.withdraw may round each band 1 wei differently from get_sum_xy, which the estimate reads.
    sent = {r["account"]: r for r in log.events("liquidation_sent")}
    for r in landed:
        row = rows0[r["account"]]
        assert r["debt_repaid"] == row[3]
        assert abs(r["stablecoin_from_bands"] - row[1]) <= 11 and abs(r["collateral_received"] - row[2]) <= 11
        # value of one collateral wei in stablecoin wei: the estimate may differ by ≤ 11 band roundings
        wei_value = 1 + m.amm.functions.price_oracle().call() * 10 ** (18 - m.collateral_decimals) // E
        assert abs(r["reward"] - sent[r["account"]]["expected_reward"]) <= 11 * wei_value and r["reward"] > 0
    # the approval was managed: bounded, sent once, before the first liquidation
    approvals = log.events("approval_sent")
    assert len(approvals) == 1
    assert m.stablecoin.functions.allowance(KEEPER, m.controller.address).call() < 2**255


async def test_soft_liquidation_is_logged_entering_and_leaving(world, tmp_path):
    m, users, arb = world
    _engine, log = await run_keeper(m, tmp_path, blocks=1)
    entered = {r["account"] for r in log.events("loan_soft_liquidation_entered")}
    active = m.amm.functions.active_band().call()
    assert entered == {u for u in users if m.user_bands(u)[0] <= active}
    # price recovers: arbitrage converts the bands back
    m.lower_price_in_steps(m.oracle_price() * 115 // 100, 3, arb)
    _engine, log2 = await run_keeper(m, tmp_path, blocks=2)
    assert {r["account"] for r in log2.events("loan_soft_liquidation_left")} == {
        u for u in entered if m.user_bands(u)[0] > m.amm.functions.active_band().call()
    }


async def test_payouts_match_balances_fully_and_partly_converted(world, tmp_path):
    m, users, arb = world
    # Drive the price through every band of the loan whose bands end highest: it is fully converted
    # to stablecoin while the lower loans are partly converted.
    full_user = min(users, key=lambda u: (m.user_bands(u)[1], -m.user_bands(u)[0]))
    _n1, n2 = m.user_bands(full_user)
    m.lower_price_in_steps(m.amm.functions.p_oracle_down(n2).call() * 99 // 100, 4, arb)
    x, y = m.amm.functions.get_sum_xy(full_user).call()
    assert y == 0 and x > 0
    m.accrue_interest(4 * 10**10, 1_300_000)  # +5.2 % debt (≈300 % APY for 15 days): health < 0, stablecoin still covers it
    liquidatable = utl(m)
    assert full_user in liquidatable
    assert m.controller.functions.debt(full_user).call() <= x
    xy = {u: m.amm.functions.get_sum_xy(u).call() for u in liquidatable}
    partly = next(u for u in liquidatable if xy[u][0] > 0 and xy[u][1] > 0)
    m.fund_stablecoin(KEEPER, m.usd(10**6))
    pay_partly = m.controller.functions.tokens_to_liquidate(partly).call({"from": KEEPER})
    assert m.controller.functions.tokens_to_liquidate(full_user).call({"from": KEEPER}) == 0
    s0, c0 = m.stablecoin.functions.balanceOf(KEEPER).call(), m.collateral.functions.balanceOf(KEEPER).call()
    _engine, log = await run_keeper(m, tmp_path, blocks=4)
    events = {e["args"]["user"]: e["args"] for e in m.controller.events.Liquidate.get_logs(from_block=0)}
    full_ev, part_ev = events[full_user], events[partly]
    # fully converted: the keeper pays nothing, receives the surplus x − debt
    assert full_ev["collateral_received"] == 0 and full_ev["stablecoin_received"] >= full_ev["debt"]
    # partly converted: pays tokens_to_liquidate (± the AMM's per-band withdraw rounding), receives the collateral
    assert abs(part_ev["debt"] - part_ev["stablecoin_received"] - pay_partly) <= 11
    all_ev = [e for e in events.values() if e["liquidator"] == KEEPER]
    s1, c1 = m.stablecoin.functions.balanceOf(KEEPER).call(), m.collateral.functions.balanceOf(KEEPER).call()
    assert s1 - s0 == sum(e["stablecoin_received"] - e["debt"] for e in all_ev)
    assert c1 - c0 == sum(e["collateral_received"] for e in all_ev)
    landed = {r["account"]: r for r in log.events("liquidation_landed")}
    sent = {r["account"]: r for r in log.events("liquidation_sent")}
    assert landed[full_user]["stable_paid"] == 0 and abs(landed[partly]["stable_paid"] - pay_partly) <= 11
    assert landed[partly]["collateral_paid_in"] == "token" and "collateral_paid_in" not in landed[full_user]  # no collateral
    wei_value = 1 + m.amm.functions.price_oracle().call() * 10 ** (18 - m.collateral_decimals) // E
    for u in (full_user, partly):
        assert abs(landed[u]["reward"] - sent[u]["expected_reward"]) <= 11 * wei_value  # per-band withdraw rounding


async def test_partial_frac_when_inventory_is_short(world, tmp_path):
    m, users, _arb = world
    sharp_step(m, 5)
    pays = {u: m.controller.functions.tokens_to_liquidate(u).call({"from": KEEPER}) for u in utl(m)}
    assert min(pays.values()) > 0
    m.fund_stablecoin(KEEPER, min(pays.values()) // 3)  # a third of the cheapest full liquidation
    debts0 = {u: m.controller.functions.debt(u).call() for u in pays}
    _engine, log = await run_keeper(m, tmp_path, blocks=2, protocol={"min_frac": "0.05"})
    sent = log.events("liquidation_sent")
    assert sent and all(r["kind"] == "frac" for r in sent)
    for ev in (e["args"] for e in m.controller.events.Liquidate.get_logs(from_block=0)):
        u = ev["user"]
        assert ev["liquidator"] == KEEPER and 0 < ev["debt"] < debts0[u]
        assert m.controller.functions.loan_exists(u).call()  # the rest of the loan stays open
        assert m.controller.functions.debt(u).call() == debts0[u] - ev["debt"]
    assert m.stablecoin.functions.balanceOf(KEEPER).call() < min(pays.values()) // 3


async def test_unaffordable_and_unprofitable_are_skipped(world, tmp_path):
    m, _users, _arb = world
    sharp_step(m, 5)
    nonce0 = m.chain.nonce(KEEPER)
    # no stablecoin at all: the partly converted loans need some → unaffordable (nothing sent)
    _e, log = await run_keeper(m, tmp_path, blocks=2, protocol={"min_frac": "0.5"})
    statuses = {r["account"]: r["status"] for r in log.events("position_status")}
    assert "unaffordable" in statuses.values()
    m.fund_stablecoin(KEEPER, m.usd(10**6))
    _e, log = await run_keeper(m, tmp_path, blocks=2, profit={"min_profit": "1000000"})
    assert m.chain.nonce(KEEPER) == nonce0 or not log.events("liquidation_sent")
    skips = [r for r in log.events("liquidation_skipped") if r["reason"] == "unprofitable"]
    assert skips and all(r["est_profit"] < r["min_profit"] for r in skips)
    assert not log.events("liquidation_sent")


async def test_deep_underwater_loan_is_unprofitable(world, tmp_path):
    m, _users, _arb = world
    sharp_step(m, 25)  # a gap far below the bands: collateral no longer covers the debt
    m.fund_stablecoin(KEEPER, m.usd(10**6))
    nonce0 = m.chain.nonce(KEEPER)
    _e, log = await run_keeper(m, tmp_path, blocks=2)
    losing = [r for r in log.events("liquidation_skipped") if r["reason"] == "unprofitable" and r["expected_reward"] < 0]
    assert losing
    assert not any(r["account"] == s["account"] for r in log.events("liquidation_sent") for s in losing)
    assert m.chain.nonce(KEEPER) - nonce0 == len(log.events("liquidation_sent")) + len(log.events("approval_sent"))


async def test_min_x_slippage_revert_is_handled_and_not_resent_blindly(world, tmp_path):
    m, users, arb = world
    sharp_step(m, 5)
    m.fund_stablecoin(KEEPER, m.usd(10**6))
    amount = m.units(20)
    m.fund_collateral(arb, amount)
    m.chain.tx(m.collateral.functions.approve(m.amm.address, 2**256 - 1), sender=arb)
    cfg = keeper_config(
        m.chain.url, tmp_path / "k.sqlite", [llamma_protocol(m, min_x_slippage="0")], tx={"max_in_flight_per_market": 1}
    )
    engine, log = await start_engine(cfg)
    try:
        await step(engine)  # the stablecoin approval (mined at once)
        assert log.events("approval_sent")
        m.chain.set_automine(False)
        await step(engine)  # the best liquidation waits in the mempool
        pending = log.events("liquidation_sent")[-1]
        # Someone sells collateral into the AMM first: the bands convert back, x withdrawn < min_x.
        m.chain.w3.eth.send_transaction(
            {
                "from": arb,
                "to": m.amm.address,
                "gas": 3_000_000,
                "data": m.amm.functions.exchange(1, 0, amount, 0)._encode_transaction_data(),
                "maxPriorityFeePerGas": 50 * 10**9,
                "maxFeePerGas": 300 * 10**9,
            }
        )
        m.chain.mine()
        m.chain.set_automine(True)
        await step(engine)  # settles the reverted liquidation
        reverted = [r for r in log.events("liquidation_reverted") if r["tx"] == pending["tx"]]
        assert reverted and "Slippage" in reverted[0]["reason"]
        sends = len([r for r in log.events("liquidation_sent") if r["account"] == pending["account"]])
        retry_after = reverted[0]["retry_after_block"]
        assert retry_after > m.chain.block_number() + 1
        steps = 0
        while m.chain.block_number() + 1 < retry_after:  # every head within the failure cooldown: not resent blindly
            m.chain.mine()
            await step(engine)
            steps += 1
            assert len([r for r in log.events("liquidation_sent") if r["account"] == pending["account"]]) == sends
        assert steps >= 1
    finally:
        m.chain.set_automine(True)
        await engine.close()


async def test_local_health_and_soft_flags_agree_with_views(world):
    m, users, _arb = world
    sharp_step(m, 2)
    adapter, rpc, head = await open_adapter(m.chain.url, llamma_protocol(m))
    try:
        await adapter.prepare_scan(head)
        evals = {e.key.account: e for e in adapter.evaluate(head, full=True)}
        mk = adapter.mkts[m.controller.address]
        active = m.amm.functions.active_band().call(block_identifier=head.number)
        p_o = m.amm.functions.price_oracle().call(block_identifier=head.number)
        for u in users:
            f = evals[u].fields
            c = m.controller.functions
            debt = c.debt(u).call(block_identifier=head.number)
            ld = c.liquidation_discounts(u).call(block_identifier=head.number)
            x_down = m.amm.functions.get_x_down(u).call(block_identifier=head.number)
            n1, _n2 = m.amm.functions.read_user_tick_numbers(u).call(block_identifier=head.number)
            x, y = m.amm.functions.get_sum_xy(u).call(block_identifier=head.number)
            p_up = m.amm.functions.p_oracle_up(n1).call(block_identifier=head.number)
            for full in (False, True):
                local = lm.health(
                    x_down,
                    debt,
                    ld,
                    full=full,
                    n1=n1,
                    active_band=active,
                    price_oracle=p_o,
                    p_up_n1=p_up,
                    y=y,
                    collateral_precision=mk.collateral_precision,
                    divisor_has_borrowed_precision=mk.variant == "v3",
                )
                assert local == c.health(u, full).call(block_identifier=head.number)
            assert f["health_full"] == c.health(u, True).call(block_identifier=head.number)
            assert f["soft"] == (n1 <= active)
            assert (f["x"], f["y"]) == (x, y)
            assert f["converted"] == lm.converted_share(x, y, p_o, mk.collateral_precision)
            assert f["pay"] == c.tokens_to_liquidate(u).call({"from": KEEPER}, block_identifier=head.number)
        assert mk.variant == m.variant
    finally:
        await rpc.close()


async def test_capital_cap_gives_a_partial_frac_and_exact_approval(world, tmp_path):
    m, _users, _arb = world
    sharp_step(m, 5)
    pays = {u: m.controller.functions.tokens_to_liquidate(u).call({"from": KEEPER}) for u in utl(m)}
    m.fund_stablecoin(KEEPER, m.usd(10**6))  # plenty of inventory, but the operator caps capital
    cap = min(pays.values()) // 2 // E
    _engine, log = await run_keeper(
        m, tmp_path, blocks=2, protocol={"max_capital": str(cap), "approval": "exact", "min_frac": "0.05"}
    )
    assert log.events("approval_sent")  # 'exact': one per head, for that head's liquidations
    sent = log.events("liquidation_sent")
    assert sent and all(r["kind"] == "frac" for r in sent)
    for ev in (e["args"] for e in m.controller.events.Liquidate.get_logs(from_block=0)):
        assert ev["debt"] - ev["stablecoin_received"] <= cap * E  # never more than the cap per liquidation
    # 'exact' mode approves what this block's liquidations need, not an unlimited allowance
    left = m.stablecoin.functions.allowance(KEEPER, m.controller.address).call()
    assert left < 2 * cap * E * len(pays)


async def test_approval_and_its_liquidations_go_out_at_one_head_and_nothing_is_sent_twice(world, tmp_path):
    """No allowance at the crash: the approval and every liquidation it enables are sent at the same head
    on consecutive nonces (approval first) and land in one block; while they are pending the next head
    sends no second approval and no liquidation twice."""
    m, _users, _arb = world
    sharp_step(m, 5)
    m.fund_stablecoin(KEEPER, m.usd(10**6))
    chain = m.chain
    liquidatable = set(utl(m))
    engine, log = await start_engine(keeper_config(chain.url, tmp_path / "k.sqlite", [llamma_protocol(m, approval="exact")]))
    try:
        chain.set_automine(False)
        await step(engine)
        (approval,) = log.events("approval_sent")
        sent = log.events("liquidation_sent")
        assert {r["account"] for r in sent} == liquidatable
        assert [approval["nonce"], *[r["nonce"] for r in sent]] == list(
            range(approval["nonce"], approval["nonce"] + len(sent) + 1)
        )
        await step(engine)  # evaluated again while everything is still in the pool
        assert len(log.events("approval_sent")) == 1 and len(log.events("liquidation_sent")) == len(sent)
        chain.mine()  # all of it lands in one block
        block = chain.w3.eth.get_block("latest", full_transactions=True)
        mine = [tx for tx in block.transactions if tx["from"] == KEEPER]
        assert len(mine) == len(sent) + 1
        assert all(chain.w3.eth.get_transaction_receipt(tx["hash"])["status"] == 1 for tx in mine)
        chain.set_automine(True)
        await step(engine)
        await settle_pool(engine)
    finally:
        chain.set_automine(True)
        await engine.close()
    assert len(log.events("approval_sent")) == 1
    assert len(log.events("liquidation_landed")) == len(sent) and not utl(m)


def test_scan_json_lists_loans_with_health_and_soft_flags(world, tmp_path):
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.harness import KEEPER_KEY, KEY_ENV, write_config  # noqa: PLC0415

    m, users, _arb = world
    cfg = write_config(tmp_path / "k.toml", keeper_config(m.chain.url, tmp_path / "s.sqlite", [llamma_protocol(m)]))

    def scan() -> dict[str, dict]:
        proc = subprocess.run(
            [sys.executable, "-m", "keeper", "-c", str(cfg), "scan", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, KEY_ENV: KEEPER_KEY},
        )
        assert proc.returncode == 0, proc.stderr
        return {r["account"]: r for r in json.loads(proc.stdout)["positions"]}

    rows = scan()  # soft liquidation, nothing liquidatable yet
    assert set(rows) == set(users)
    active = m.amm.functions.active_band().call()
    for u, r in rows.items():
        for key in ("health_full", "soft", "converted", "debt", "x", "y", "pay", "status", "est_profit"):
            assert key in r
        assert r["soft"] == (m.user_bands(u)[0] <= active)
        assert r["status"] == ("soft-liquidation" if r["soft"] else "healthy")
        assert float(r["health_full"]) == m.health(u, True) / E
    assert any(r["soft"] for r in rows.values())
    sharp_step(m, 5)
    rows = scan()
    liquidatable = utl(m)
    for u, r in rows.items():
        assert (float(r["health_full"]) < 0) == (u in liquidatable)
        expected = ("full", "partial", "unaffordable", "unprofitable") if u in liquidatable else ("healthy", "soft-liquidation")
        assert r["status"] in expected


async def test_m2_weth_market_pays_full_liquidations_in_native_eth(wide_chain, tmp_path):
    """On an M2 market whose collateral is WETH, `liquidate(user, min_x)` defaults to use_eth: the
    keeper receives native ETH (its balance moves by collateral − gas, to the wei), no WETH, and the
    landed reward is the estimate; a partial `frac` (use_eth=False) is paid in WETH."""
    chain = wide_chain
    with chain.reverted():
        m = deploy_llamma(chain, variant="m2", weth_collateral=True)
        assert m.collateral_is_weth
        users = list(chain.w3.eth.accounts[10:16])
        for i, u in enumerate(users):
            col, n = m.units(5 + i), 4 + i % 4
            m.create_loan(u, col, m.max_borrowable(col, n) * 95 // 100, n)
        m.lower_price_in_steps(m.oracle_price() * 90 // 100, 4, chain.w3.eth.accounts[27])
        sharp_step(m, 6)
        liquidatable = utl(m)
        assert len(liquidatable) >= 2
        pays = {u: m.controller.functions.tokens_to_liquidate(u).call({"from": KEEPER}) for u in liquidatable}
        cheapest = min(pays, key=lambda u: pays[u])
        # enough stablecoin for every full liquidation but the dearest: that one becomes a frac
        dearest = max(pays, key=lambda u: pays[u])
        m.fund_stablecoin(KEEPER, sum(pays.values()) - pays[dearest] + pays[dearest] // 3)
        eth0, weth0 = chain.w3.eth.get_balance(KEEPER), m.collateral.functions.balanceOf(KEEPER).call()
        start = chain.block_number()
        _engine, log = await run_keeper(m, tmp_path, blocks=3, protocol={"min_frac": "0.05", "approval": "unlimited"})
        evs = [e for e in m.controller.events.Liquidate.get_logs(from_block=start) if e["args"]["liquidator"] == KEEPER]
        landed = {r["tx"]: r for r in log.events("liquidation_landed")}
        assert len(evs) >= 2 and cheapest in {e["args"]["user"] for e in evs}
        eth_in = weth_in = gas = 0
        hashes = {e["transactionHash"].to_0x_hex() for e in evs} | {r["tx"] for r in log.events("approval_sent")}
        for tx in hashes:
            rc = chain.w3.eth.get_transaction_receipt(tx)
            gas += rc.gasUsed * rc.effectiveGasPrice
        kinds = set()
        for e in evs:
            tx = e["transactionHash"].to_0x_hex()
            full = bytes(chain.w3.eth.get_transaction(tx)["input"])[:4] == bytes.fromhex("bcbaf487")  # liquidate(user, min_x)
            kinds.add("full" if full else "frac")
            if full:
                eth_in += e["args"]["collateral_received"]
            else:
                weth_in += e["args"]["collateral_received"]
            if tx in landed:
                assert landed[tx]["collateral_received"] == e["args"]["collateral_received"]
                assert landed[tx]["kind"] == ("full" if full else "frac")
                assert landed[tx]["collateral_paid_in"] == ("native" if full else "token")
        assert kinds == {"full", "frac"} and eth_in > 0 and weth_in > 0 and len(landed) >= len(evs) - 1
        assert chain.w3.eth.get_balance(KEEPER) - eth0 == eth_in - gas
        assert m.collateral.functions.balanceOf(KEEPER).call() - weth0 == weth_in
