# pragma version ~=0.4.3
"""
@title LLAMMA band-grid arithmetic (stateless module)
@notice Integer helpers shared by the AMM and the Controllers.
        The band grid is p_oracle_up(n) = P_base * ((A - 1) / A) ** n.  Powers of the band ratio
        r = (A - 1) / A are computed by binary exponentiation in 1e36 fixed point; every
        multiplication rounds down, so a power of r is low by at most ~(2 log2|n|) units of 1e-36
        (relative), far below anything a 1e18 price can show.
"""

WAD: constant(uint256) = 10**18
RAY: constant(uint256) = 10**36
# Band numbers are limited to |n| < 2**POW_BITS (far beyond any reachable grid position).
POW_BITS: constant(uint256) = 14
MAX_ABS_BAND: constant(uint256) = 2**POW_BITS - 1


@internal
@pure
def ratio_pow(A: uint256, n: int256) -> uint256:
    """
    @notice ((A - 1) / A) ** n as a 1e36 fixed-point number; for n < 0 this is (A / (A - 1)) ** |n|
    @param A Band density (band width is 1/A)
    @param n Band number, |n| <= 2**14 - 1
    @return Power of the band ratio, 1e36 = 1.0 (rounded down at every step; the negative
            branch is 1e72 // r**|n|)
    """
    m: uint256 = convert(abs(n), uint256)
    assert m <= MAX_ABS_BAND, "Band out of range"
    step: uint256 = (A - 1) * RAY // A
    acc: uint256 = RAY
    for _i: uint256 in range(POW_BITS):
        if m % 2 == 1:
            acc = acc * step // RAY
        m = m >> 1
        if m == 0:
            break
        step = step * step // RAY
    if n < 0:
        # (A / (A - 1)) ** |n| must stay representable when multiplied by a price
        assert acc >= WAD, "Band out of range"
        return RAY * RAY // acc
    return acc


@internal
@pure
def log_floor(A: uint256, v: uint256) -> int256:
    """
    @notice Largest band offset k such that v * ((A - 1) / A) ** k >= 1, i.e.
            floor(ln(v) / ln(A / (A - 1))), for a 1e18 fixed-point v > 0
    @dev Greedy binary decomposition over r ** (2 ** i), i = 13 .. 0, using only powers of
         r <= 1 (no overflow). Results are clamped to [-(2**14), 2**14 - 1]. Rounding down
         of the powers can only make k smaller by one exactly at a boundary.
    @param A Band density
    @param v Ratio in 1e18 fixed point
    @return k (signed)
    """
    assert v > 0, "Amount too low"
    pows: uint256[POW_BITS] = empty(uint256[POW_BITS])
    pows[0] = (A - 1) * RAY // A
    for i: uint256 in range(1, POW_BITS):
        pows[i] = pows[i - 1] * pows[i - 1] // RAY

    target: uint256 = v * WAD  # v in 1e36
    k: uint256 = 0
    if target >= RAY:
        # largest k >= 0 with v * r**k >= 1: keep multiplying v by r**(2**i) while it stays >= 1
        acc: uint256 = target
        for j: uint256 in range(POW_BITS):
            i: uint256 = POW_BITS - 1 - j
            t: uint256 = acc * pows[i] // RAY
            if t >= RAY:
                acc = t
                k += 1 << i
        return convert(k, int256)

    # v < 1: smallest m > 0 with r**m <= v; then k = -m. Find the largest m' with r**m' > v.
    acc: uint256 = RAY
    for j: uint256 in range(POW_BITS):
        i: uint256 = POW_BITS - 1 - j
        t: uint256 = acc * pows[i] // RAY
        if t > target:
            acc = t
            k += 1 << i
    return -convert(k + 1, int256)
