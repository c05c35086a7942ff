# pragma version ~=0.4.3
"""
@title Reference 2-coin pool with the Curve stableswap ABI (int128 indices)
@notice Test/demo fixture: exchange(int128,int128,uint256,uint256) -> uint256 (0x3df02124) and
        get_dy(int128,int128,uint256) -> uint256 (0x5e0d443f), coins(uint256), balances(uint256),
        fee(). The maths is constant product with a fee (see _constant_product.vy), not stableswap.
"""

from . import _constant_product as cp

initializes: cp

exports: (cp.coins, cp.balances, cp.fee, cp.add_liquidity)


@deploy
def __init__(coin0: address, coin1: address, fee: uint256):
    cp.__init__(coin0, coin1, fee)


@external
@view
def get_dy(i: int128, j: int128, dx: uint256) -> uint256:
    assert i >= 0 and j >= 0, "bad index"
    return cp._get_dy(convert(i, uint256), convert(j, uint256), dx)


@external
@nonreentrant
def exchange(i: int128, j: int128, dx: uint256, min_dy: uint256) -> uint256:
    assert i >= 0 and j >= 0, "bad index"
    return cp._exchange(convert(i, uint256), convert(j, uint256), dx, min_dy)
