# pragma version ~=0.4.3
"""
@title Reference 2-coin pool with the Curve cryptoswap ABI (uint256 indices)
@notice Test/demo fixture: exchange(uint256,uint256,uint256,uint256) -> uint256 (0x5b41b908) and
        get_dy(uint256,uint256,uint256) -> uint256 (0x556d6e9f), coins(uint256), balances(uint256),
        fee(). The maths is constant product with a fee (see _constant_product.vy), not cryptoswap.
"""

from . import _constant_product as cp

initializes: cp

exports: (cp.coins, cp.balances, cp.fee, cp.add_liquidity)


@deploy
def __init__(coin0: address, coin1: address, fee: uint256):
    cp.__init__(coin0, coin1, fee)


@external
@view
def get_dy(i: uint256, j: uint256, dx: uint256) -> uint256:
    return cp._get_dy(i, j, dx)


@external
@nonreentrant
def exchange(i: uint256, j: uint256, dx: uint256, min_dy: uint256) -> uint256:
    return cp._exchange(i, j, dx, min_dy)
