// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity 0.6.9;
pragma experimental ABIEncoderV2;

import { IAmm } from "./Interfaces.sol";

/// @notice InsuranceFund stub: the AMM registry the ClearingHouse's `requireAmm` asks.
contract InsuranceFund {
    mapping(address => bool) private ammMetadata;
    IAmm[] private amms;

    function addAmm(IAmm _amm) external {
        require(!ammMetadata[address(_amm)], "amm already added");
        ammMetadata[address(_amm)] = true;
        amms.push(_amm);
    }

    function isExistedAmm(IAmm _amm) external view returns (bool) {
        return ammMetadata[address(_amm)];
    }

    function getAllAmms() external view returns (IAmm[] memory) {
        return amms;
    }
}

/// @notice Amm stub: only `open()`.
contract Amm {
    bool public open;

    function setOpen(bool _open) external {
        open = _open;
    }
}

/// @notice A minimal EIP-1967 upgradeable proxy (as OpenZeppelin's): every call is delegated to
///         the implementation, reverts are passed through unchanged.
contract UpgradeableProxy {
    // keccak256("eip1967.proxy.implementation") - 1
    bytes32 private constant IMPLEMENTATION_SLOT = 0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;

    constructor(address _logic, bytes memory _data) public payable {
        bytes32 slot = IMPLEMENTATION_SLOT;
        assembly {
            sstore(slot, _logic)
        }
        if (_data.length > 0) {
            (bool ok, ) = _logic.delegatecall(_data);
            require(ok, "proxy: initialisation failed");
        }
    }

    fallback() external payable {
        bytes32 slot = IMPLEMENTATION_SLOT;
        assembly {
            let impl := sload(slot)
            calldatacopy(0, 0, calldatasize())
            let result := delegatecall(gas(), impl, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            switch result
                case 0 {
                    revert(0, returndatasize())
                }
                default {
                    return(0, returndatasize())
                }
        }
    }
}
