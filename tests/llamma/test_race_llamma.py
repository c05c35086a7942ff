"""The race on LLAMMA (issue 8): a loan that needs no payment (x ≥ d) never waits for an approval, and
loans that do go out in the same block as their approval, on consecutive nonces."""

from __future__ import annotations

import pytest

from tests.harness import KEEPER, keeper_config, settle_pool, start_engine, step
from tests.llamma.conftest import make_fully_converted_rekt, make_partly_converted_rekt

pytestmark = pytest.mark.chain


def config(m, tmp_path, **protocol) -> dict:
    return keeper_config(
        m.chain.url,
        tmp_path / "k.sqlite",
        [{"kind": "llamma", "name": "crv", "factory": m.factory.address, "start_block": 0, **protocol}],
    )


async def first_head(m, cfg) -> tuple[list[dict], list[dict], int]:
    """One head with the pool held: (approvals sent, liquidations sent, block they were mined in)."""
    engine, log = await start_engine(cfg)
    try:
        m.chain.set_automine(False)
        await step(engine)
        approvals, sent = log.events("approval_sent"), log.events("liquidation_sent")
        m.chain.mine()
        block = m.chain.block_number()
        m.chain.set_automine(True)
        await step(engine)
        await settle_pool(engine)
    finally:
        m.chain.set_automine(True)
        await engine.close()
    assert len(log.events("liquidation_landed")) == len(sent) and not log.events("liquidation_reverted")
    return approvals, sent, block


@pytest.mark.parametrize("name", ["m2-8dec", "v3-8dec"])
async def test_zero_pay_loan_is_liquidated_at_the_first_head_with_no_stablecoin_and_no_approval(
    name, deployments, fresh, accounts, tmp_path
):
    m = deployments[name]
    alice = accounts["alice"]
    make_fully_converted_rekt(m, alice, accounts["arb"])
    assert m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER}) == 0
    assert m.stablecoin.functions.balanceOf(KEEPER).call() < 10**12  # no inventory to speak of (dust)
    approvals, sent, _block = await first_head(m, config(m, tmp_path))
    assert not approvals and [r["account"] for r in sent] == [alice]
    assert m.controller.functions.debt(alice).call() == 0


async def test_paying_loans_go_out_with_their_approval_and_the_zero_pay_one_does_not_wait(deployments, fresh, accounts, tmp_path):
    m = deployments["v3-8dec"]
    alice, bob = accounts["alice"], accounts["bob"]
    make_fully_converted_rekt(m, alice, accounts["arb"])  # pays nothing
    make_partly_converted_rekt(m, bob, accounts["arb"])  # pays d − x
    assert m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER}) == 0
    pay = m.controller.functions.tokens_to_liquidate(bob).call({"from": KEEPER})
    assert pay > 0
    m.fund_stablecoin(KEEPER, pay * 3)
    assert m.stablecoin.functions.allowance(KEEPER, m.controller.address).call() == 0
    approvals, sent, block = await first_head(m, config(m, tmp_path, approval="exact"))
    assert {r["account"] for r in sent} == {alice, bob}
    (approval,) = approvals
    by_account = {r["account"]: r for r in sent}
    assert approval["nonce"] + 1 == by_account[bob]["nonce"]  # the approval right before the loan that needs it
    mined = [tx for tx in m.chain.w3.eth.get_block(block, full_transactions=True).transactions if tx["from"] == KEEPER]
    assert len(mined) == 3  # approval and both liquidations in the same block
    assert m.controller.functions.debt(alice).call() == m.controller.functions.debt(bob).call() == 0
