# pragma version ~=0.4.3
"""
@title Perp v1 fixed-point types and arithmetic
@notice Stateless module shared by the perp reference contracts.
        `Decimal` / `SignedDecimal` are the ABI wrappers of the real contracts
        (Decimal.decimal {uint256 d} is ABI `tuple(uint256)`, SignedDecimal.signedDecimal
        {int256 d} is `tuple(int256)`): use them only at the ABI boundary, compute on raw ints.
        All values are 18-decimal fixed point (1e18 = 1.0). Unsigned helpers floor; signed
        helpers truncate toward zero (EVM SDIV), exactly like Perp's SignedDecimal library.
"""

UNIT: constant(uint256) = 10**18
SUNIT: constant(int256) = 10**18


struct Decimal:
    d: uint256


struct SignedDecimal:
    d: int256


@internal
@pure
def mul_d(a: uint256, b: uint256) -> uint256:
    """@notice floor(a * b / 1e18)"""
    return a * b // UNIT


@internal
@pure
def div_d(a: uint256, b: uint256) -> uint256:
    """@notice floor(a * 1e18 / b)"""
    return a * UNIT // b


@internal
@pure
def smul_d(a: int256, b: int256) -> int256:
    """@notice a * b / 1e18, truncated toward zero"""
    return a * b // SUNIT


@internal
@pure
def sdiv_d(a: int256, b: int256) -> int256:
    """@notice a * 1e18 / b, truncated toward zero"""
    return a * SUNIT // b


@internal
@pure
def sabs(a: int256) -> uint256:
    """@notice |a| as uint256"""
    return convert(abs(a), uint256)


@internal
@pure
def signed(a: uint256) -> int256:
    """@notice uint256 -> int256, reverting above 2**255 - 1 (MixedDecimal.fromDecimal)"""
    return convert(a, int256)


@internal
@pure
def deviation_ratio(price: uint256, reference: uint256) -> uint256:
    """
    @notice |trunc((price - reference) * 1e18 / reference)|, the spread measure of
            Amm.isOverSpreadLimit (1e18 = 100 %). Reverts "underlying price is 0".
    """
    assert reference > 0, "underlying price is 0"
    return self.sabs(self.sdiv_d(self.signed(price) - self.signed(reference), self.signed(reference)))
