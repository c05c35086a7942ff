// SPDX-License-Identifier: GPL-3.0-or-later
pragma solidity 0.6.9;

/// @notice The wire types of Perp v1 (src/utils/Decimal.sol, SignedDecimal.sol): one-field structs,
///         ABI `(uint256)` / `(int256)`. Only the types; the stubs need none of the maths.
library Decimal {
    struct decimal {
        uint256 d;
    }
}

library SignedDecimal {
    struct signedDecimal {
        int256 d;
    }
}
