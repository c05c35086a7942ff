# pragma version ~=0.4.3
"""
@title Perp v1 ClearingHouse, v2.2 behaviour (reference implementation)
@notice For the keeper's compatibility tests: the ABI of the v2.3 variant without
        `liquidateWithSlippage`, the partial close gated on the combined margin ratio (the
        one checked against maintenance, oracle-adjusted over the spread limit) and no
        backstop-LP rule. The shared logic lives in `_clearing_house_core`; amounts are 1e18 quote.
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
    quote, is_partial = core._liquidate(_amm, _trader, False, False)
    return m.Decimal(d=quote), is_partial
