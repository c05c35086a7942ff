# pragma version ~=0.4.3
"""
@title LlamaLend Controller — markets 0-7 (curve-stablecoin 9e20913f, Vyper 0.3.10)
@notice Loans and hard liquidation of one LLAMMA market (logic in _controller_core.vy).
        ABI specifics of this variant (the M2 ABI plus borrowed_token):
          * liquidate(user, min_x[, use_eth=True])  -> 0xbcbaf487 / 0x3ecdb828
          * liquidate_extended(user, min_x, frac, use_eth, callbacker, callback_args) -> 0x036aed88
          * borrowed_token() -> 0x765337b6; no approve/approval, no bytes overloads
          * repay(..., use_eth) and remove_collateral(collateral, use_eth): use_eth is inert (the
            lending factory has no WETH market), collateral is always paid as the token
          * borrow_more_extended(collateral, debt, callbacker, args): returns at once for debt = 0,
            otherwise reverts (leverage is not part of the reference)
        Rounding: debt is rounded up when more than one loan exists; d = debt * frac / 1e18 is
        rounded down.
"""

from . import _controller_core as core

initializes: core

exports: (
    core.factory,
    core.amm,
    core.collateral_token,
    core.borrowed_token,
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
    loan_discount: uint256,
    liquidation_discount: uint256,
):
    """
    @param loan_discount, liquidation_discount 1e18 based
    """
    core.__init__(collateral_token, borrowed_token, amm, factory, loan_discount, liquidation_discount, False, True, False)


@payable
@external
def __default__():
    """
    @notice Plain ETH transfers are refused (no WETH market); unknown selectors revert empty
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


@external
@nonreentrant
def borrow_more_extended(collateral: uint256, debt: uint256, callbacker: address, callback_args: DynArray[uint256, 5]):
    """
    @notice Leverage entry point of the real contract: a no-op for debt = 0 (as there), otherwise
            not supported by the reference
    """
    if debt == 0:
        return
    raise "reference: no leverage"
