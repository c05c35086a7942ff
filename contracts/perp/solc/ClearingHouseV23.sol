// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity 0.6.9;
pragma experimental ABIEncoderV2;

import { Decimal, SignedDecimal } from "./Decimal.sol";
import { IAmm, IInsuranceFund } from "./Interfaces.sol";

/// @title Perp v1 ClearingHouse v2.3 (HEAD) stub, compiled by solc 0.6.9 like the real one
/// @notice For the keeper's variant probe: the entry points it calls keep the real contract's
///         signatures, order of checks and revert strings (perpetual-protocol/perpetual-protocol
///         src/ClearingHouse.sol at HEAD):
///         - `liquidateWithSlippage` reads the position, then calls `liquidate`;
///         - `liquidate` is nonReentrant, then `requireAmm(_amm, true)` ("amm not found",
///           "amm was closed"), then `getMarginRatio`, which reverts "positionSize is 0".
///         Past those checks the stub stops ("stub: no liquidation engine"): it holds no positions.
///         Upgradeable like the real one: no constructor, `initialize` once (also through a proxy).
///         No fallback function, as in the real contract.
contract ClearingHouse {
    struct Position {
        SignedDecimal.signedDecimal size;
        Decimal.decimal margin;
        Decimal.decimal openNotional;
        SignedDecimal.signedDecimal lastUpdatedCumulativePremiumFraction;
        uint256 liquidityHistoryIndex;
        uint256 blockNumber;
    }

    struct AmmMap {
        uint256 lastRestrictionBlock;
        SignedDecimal.signedDecimal[] cumulativePremiumFractions;
        mapping(address => Position) positionMap;
    }

    bool private initialized;
    uint256 private reentrancyStatus;
    mapping(address => AmmMap) internal ammMap;
    IInsuranceFund public insuranceFund;
    Decimal.decimal public partialLiquidationRatio;

    function initialize(IInsuranceFund _insuranceFund) external {
        require(!initialized, "Contract instance has already been initialized");
        require(address(_insuranceFund) != address(0), "Invalid IInsuranceFund");
        initialized = true;
        insuranceFund = _insuranceFund;
    }

    modifier nonReentrant() {
        require(reentrancyStatus != 2, "ReentrancyGuard: reentrant call");
        reentrancyStatus = 2;
        _;
        reentrancyStatus = 1;
    }

    function liquidateWithSlippage(
        IAmm _amm,
        address _trader,
        Decimal.decimal memory _quoteAssetAmountLimit
    ) external returns (Decimal.decimal memory quoteAssetAmount, bool isPartialClose) {
        Position memory position = getPosition(_amm, _trader);
        (quoteAssetAmount, isPartialClose) = liquidate(_amm, _trader);

        uint256 limit =
            isPartialClose
                ? (_quoteAssetAmountLimit.d * partialLiquidationRatio.d) / 1 ether
                : _quoteAssetAmountLimit.d;
        if (position.size.d > 0) {
            require(quoteAssetAmount.d >= limit, "Less than minimal quote token");
        } else if (position.size.d < 0 && limit != 0) {
            require(quoteAssetAmount.d <= limit, "More than maximal quote token");
        }
        return (quoteAssetAmount, isPartialClose);
    }

    function liquidate(IAmm _amm, address _trader)
        public
        nonReentrant()
        returns (Decimal.decimal memory quoteAssetAmount, bool isPartialClose)
    {
        requireAmm(_amm, true);
        requirePositionSize(getPosition(_amm, _trader).size); // first check of getMarginRatio
        revert("stub: no liquidation engine");
    }

    function getPosition(IAmm _amm, address _trader) public view returns (Position memory) {
        return ammMap[address(_amm)].positionMap[_trader];
    }

    function requireAmm(IAmm _amm, bool _open) private view {
        require(insuranceFund.isExistedAmm(_amm), "amm not found");
        require(_open == _amm.open(), _open ? "amm was closed" : "amm is open");
    }

    function requirePositionSize(SignedDecimal.signedDecimal memory _size) private pure {
        require(_size.d != 0, "positionSize is 0");
    }
}
