# pragma version ~=0.4.3
"""
@title Perp v1 ClearingHouse, v2.3 (HEAD) behaviour (reference implementation)
@notice Same selectors, encodings, events, rounding and revert strings as Perpetual
        Protocol v1's ClearingHouse at HEAD (docs/PROTOCOLS.md A.2-A.5):
        - the partial close is gated on the SPOT-only margin ratio;
        - a liquidation that leaves bad debt needs a backstop liquidity provider;
        - `liquidateWithSlippage` exists.
        The shared logic lives in the `_clearing_house_core` module; amounts are 1e18 quote.
"""

from . import _math as m
from . import _clearing_house_core as core

initializes: core
exports: core.__interface__


@deploy
def __init__(_initMarginRatio: uint256, _maintenanceMarginRatio: uint256, _liquidationFeeRatio: uint256, _insuranceFund: address):
    """
    @param _initMarginRatio 1e18 = 100 % (10 % = 1e17 allows 10x)
    @param _maintenanceMarginRatio 1e18 = 100 %
    @param _liquidationFeeRatio share of the liquidated notional charged, 1e18 = 100 % (half to the liquidator)
    """
    core.__init__(_initMarginRatio, _maintenanceMarginRatio, _liquidationFeeRatio, _insuranceFund)


@external
@nonreentrant
def liquidate(_amm: address, _trader: address) -> (m.Decimal, bool):
    """
    @notice liquidate `_trader` when its margin ratio is strictly below maintenance
    @return (quote exchanged, 1e18; true for a partial close)
    """
    quote: uint256 = 0
    is_partial: bool = False
    quote, is_partial = core._liquidate(_amm, _trader, True, True)
    return m.Decimal(d=quote), is_partial


@external
@nonreentrant
def liquidateWithSlippage(_amm: address, _trader: address, _quoteAssetAmountLimit: m.Decimal) -> (m.Decimal, bool):
    """
    @notice `liquidate` with a bound on the quote exchanged (scaled by partialLiquidationRatio
            on a partial close): a floor for longs, a ceiling (0 = none) for shorts
    @param _quoteAssetAmountLimit 1e18 quote
    """
    size: int256 = core.positionMap[_amm][_trader].size
    quote: uint256 = 0
    is_partial: bool = False
    quote, is_partial = core._liquidate(_amm, _trader, True, True)
    limit: uint256 = _quoteAssetAmountLimit.d
    if is_partial:
        limit = m.mul_d(limit, core.partialLiquidationRatio)
    if size > 0:
        assert quote >= limit, "Less than minimal quote token"
    elif size < 0 and limit != 0:
        assert quote <= limit, "More than maximal quote token"
    return m.Decimal(d=quote), is_partial
