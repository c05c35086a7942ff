// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity 0.6.9;

/// @notice The parts of Perp v1's IAmm / IInsuranceFund the ClearingHouse stubs call.
interface IAmm {
    function open() external view returns (bool);
}

interface IInsuranceFund {
    function isExistedAmm(IAmm _amm) external view returns (bool);
}
