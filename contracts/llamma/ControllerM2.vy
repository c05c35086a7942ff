# pragma version ~=0.4.3
"""
@title crvUSD Controller — M2 ABI (markets of 2023-05-31, LlamaLend markets 0-7)
@notice Loans and hard liquidation of one LLAMMA market (logic in _controller_core.vy).
        ABI specifics of this variant:
          * liquidate(user, min_x[, use_eth=True])  -> 0xbcbaf487 / 0x3ecdb828
          * liquidate_extended(user, min_x, frac, use_eth, callbacker, callback_args) -> 0x036aed88
          * no borrowed_token() (read AMM.coins(0) or factory.stablecoin()), no approve/approval
          * repay(..., use_eth) and remove_collateral(collateral, use_eth)
        When the collateral is the WETH given at deployment and use_eth is True (the default),
        collateral is paid out as native ETH with a 10 000-gas stipend; a recipient that refuses
        ETH makes the call revert.
        Rounding: debt and the repaid share d = debt * frac / 1e18 are rounded down.
"""

from . import _controller_core as core

initializes: core

exports: (
    core.factory,
    core.amm,
    core.collateral_token,
    core.amm_price,
    core.debt,
    core.loan_exists,
    core.total_debt,
    core.max_borrowable,
    core.calculate_debt_n1,
    core.create_loan,
    core.borrow_more,
    core.add_collateral,
    core.health,
    core.users_to_liquidate,
    core.user_state,
    core.user_prices,
    core.tokens_to_liquidate,
    core.set_borrowing_discounts,
    core.set_borrow_rate,
    core.liquidation_discounts,
    core.loans,
    core.loan_ix,
    core.n_loans,
    core.minted,
    core.redeemed,
    core.liquidation_discount,
    core.loan_discount,
)

@deploy
def __init__(
    collateral_token: address,
    borrowed_token: address,
    amm: address,
    factory: address,
    weth: address,
    loan_discount: uint256,
    liquidation_discount: uint256,
):
    """
    @param weth Native-ETH wrapper; the ETH payout path is active iff collateral_token == weth
    @param loan_discount, liquidation_discount 1e18 based
    """
    core.__init__(
        collateral_token, borrowed_token, amm, factory, loan_discount, liquidation_discount,
        weth != empty(address) and weth == collateral_token, False, False
    )


@payable
@external
def __default__():
    """
    @notice Plain ETH transfers (WETH unwrapping a payout); ETH only in the WETH market
    """
    if msg.value > 0:
        assert core.USE_ETH
    assert len(msg.data) == 0


@external
@nonreentrant
def liquidate(user: address, min_x: uint256, use_eth: bool = True):
    """
    @notice Liquidate the whole loan of `user` (or self-liquidate)
    @param min_x Minimum borrowed tokens withdrawn from the user's bands (sandwich guard)
    @param use_eth Pay WETH collateral as native ETH (WETH market only)
    """
    core._liquidate(user, min_x, 10**18, use_eth, empty(address), [], b"")


@external
@nonreentrant
def liquidate_extended(
    user: address,
    min_x: uint256,
    frac: uint256,
    use_eth: bool,
    callbacker: address,
    callback_args: DynArray[uint256, 5],
):
    """
    @notice Liquidate the fraction `frac` (1e18 = 100%, capped) of the loan; with a callbacker the
            collateral is sent to it and callback_liquidate(user, x, y, d, callback_args) must
            return (stablecoins, collateral) covering d - x
    """
    core._liquidate(user, min_x, min(frac, 10**18), use_eth, callbacker, callback_args, b"")


@external
@nonreentrant
def repay(_d_debt: uint256, _for: address = msg.sender, max_active_band: int256 = max_value(int256), use_eth: bool = True):
    """
    @notice Repay up to `_d_debt` (native units) of the loan of `_for`, paid by msg.sender
    """
    core._repay(_d_debt, _for, max_active_band, use_eth)


@external
@nonreentrant
def remove_collateral(collateral: uint256, use_eth: bool = True):
    """
    @notice Withdraw `collateral` (native units) from msg.sender's loan while it is not in soft liquidation
    """
    core._remove_collateral(collateral, msg.sender, use_eth)
