# pragma version ~=0.4.3
"""
@title crvUSD / LlamaLend Controller — V3 ABI (Vyper 0.3.10 line: LlamaLend, weETH/cbBTC/LBTC)
@notice Loans and hard liquidation of one LLAMMA market (logic in _controller_core.vy).
        ABI specifics of this variant:
          * liquidate(user, min_x) -> 0xbcbaf487 (no use_eth)
          * liquidate_extended(user, min_x, frac, callbacker, callback_args[, callback_bytes])
            -> 0xfed9698c / 0xd28952fc; non-empty bytes select the callback overload with bytes
          * borrowed_token(), approve(spender, allow), approval(owner, spender)
          * borrow_more_extended(collateral, debt, callbacker, args[, callback_bytes[, _for]]):
            returns at once for debt = 0, otherwise reverts (leverage is not part of the reference)
        A caller approved by the user liquidates like the user itself: no health check, h = 0.
        Rounding: debt is rounded up when more than one loan exists; the repaid share
        d = debt * frac / 1e18 is rounded up (tokens_to_liquidate still rounds it down).
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
    core.approve,
    core.approval,
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
    core.__init__(collateral_token, borrowed_token, amm, factory, loan_discount, liquidation_discount, False, True, True)


@external
@nonreentrant
def liquidate(user: address, min_x: uint256):
    """
    @notice Liquidate the whole loan of `user` (or self-liquidate / liquidate as an approved caller)
    @param min_x Minimum borrowed tokens withdrawn from the user's bands (sandwich guard)
    """
    core._liquidate(user, min_x, 10**18, False, empty(address), [], b"")


@external
@nonreentrant
def liquidate_extended(
    user: address,
    min_x: uint256,
    frac: uint256,
    callbacker: address,
    callback_args: DynArray[uint256, 5],
    callback_bytes: Bytes[10**4] = b"",
):
    """
    @notice Liquidate the fraction `frac` (1e18 = 100%, capped) of the loan, optionally through a
            callbacker that receives the collateral and returns (stablecoins, collateral)
    """
    core._liquidate(user, min_x, min(frac, 10**18), False, callbacker, callback_args, callback_bytes)


@external
@nonreentrant
def repay(_d_debt: uint256, _for: address = msg.sender, max_active_band: int256 = max_value(int256)):
    """
    @notice Repay up to `_d_debt` (native units) of the loan of `_for`, paid by msg.sender
    """
    core._repay(_d_debt, _for, max_active_band, False)


@external
@nonreentrant
def remove_collateral(collateral: uint256, _for: address = msg.sender):
    """
    @notice Withdraw `collateral` (native units) from the loan of `_for` (msg.sender or approved)
    """
    core._remove_collateral(collateral, _for, False)


@external
@nonreentrant
def borrow_more_extended(
    collateral: uint256,
    debt: uint256,
    callbacker: address,
    callback_args: DynArray[uint256, 5],
    callback_bytes: Bytes[10**4] = b"",
    _for: address = msg.sender,
):
    """
    @notice Leverage entry point of the real contract: a no-op for debt = 0 (as there), otherwise
            not supported by the reference
    """
    if debt == 0:
        return
    raise "reference: no leverage"
