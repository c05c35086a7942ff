// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity 0.6.9;
pragma experimental ABIEncoderV2;

import { Decimal, SignedDecimal } from "./Decimal.sol";
import { IAmm, IInsuranceFund } from "./Interfaces.sol";

/// @title Perp v1 ClearingHouse v2.2 stub, compiled by solc 0.6.9 like the real one
/// @notice The v2.2 interface (commit 21b33cd): `liquidate` only, no `liquidateWithSlippage` and
///         no fallback function, so a call to the v2.3 selector reverts with empty data. `liquidate`
///         keeps the real order of checks and revert strings up to the margin ratio (nonReentrant,
///         "amm not found", "amm was closed", "positionSize is 0"); past them the stub stops.
///         The real `getPosition` also applies the liquidity-migration adjustment; this one holds
///         no positions, so it returns the stored (empty) one.
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

    function liquidate(IAmm _amm, address _trader) external nonReentrant() {
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
