# pragma version ~=0.4.3
"""
@title Two-coin constant-product pool logic behind the reference Curve-ABI pools
@notice Test/demo fixture. Shared by CurveStablePool.vy (int128 indices) and CurveCryptoPool.vy
        (uint256 indices): the real pools' invariants (stableswap, cryptoswap) are replaced by the
        simplest honest one, x * y = k on the internal balances, with a fee taken from the input:
            dx' = dx * (FEE_DENOMINATOR - fee) // FEE_DENOMINATOR
            dy  = balances[j] * dx' // (balances[i] + dx')
        (native token units; the price is the ratio of the raw balances, so decimals need no
        scaling). `get_dy` returns exactly what `exchange` pays in the same state. Liquidity is a
        gift: `add_liquidity` pulls the amounts and mints nothing (a seeding helper, no LP token).
"""

from ethereum.ercs import IERC20

FEE_DENOMINATOR: constant(uint256) = 10**10  # Curve's fee unit: 4 * 10**6 = 0.04 %

event TokenExchange:
    buyer: indexed(address)
    sold_id: uint256
    tokens_sold: uint256
    bought_id: uint256
    tokens_bought: uint256

event AddLiquidity:
    provider: indexed(address)
    amounts: uint256[2]

coins: public(address[2])
balances: public(uint256[2])
fee: public(uint256)


@deploy
def __init__(coin0: address, coin1: address, fee: uint256):
    assert coin0 != coin1 and coin0 != empty(address) and coin1 != empty(address)
    assert fee < FEE_DENOMINATOR // 2
    self.coins = [coin0, coin1]
    self.fee = fee


@external
@nonreentrant
def add_liquidity(amounts: uint256[2]):
    """
    @notice Pull `amounts` of coins 0 and 1 from msg.sender into the pool (no LP token: a gift)
    """
    for k: uint256 in range(2):
        if amounts[k] > 0:
            assert extcall IERC20(self.coins[k]).transferFrom(msg.sender, self, amounts[k], default_return_value=True)
            self.balances[k] += amounts[k]
    log AddLiquidity(provider=msg.sender, amounts=amounts)


@internal
@view
def _get_dy(i: uint256, j: uint256, dx: uint256) -> uint256:
    assert i < 2 and j < 2 and i != j, "bad index"
    dx_fee: uint256 = dx * (FEE_DENOMINATOR - self.fee) // FEE_DENOMINATOR
    return self.balances[j] * dx_fee // (self.balances[i] + dx_fee)


@internal
def _exchange(i: uint256, j: uint256, dx: uint256, min_dy: uint256) -> uint256:
    """
    @notice Pull dx of coin i from msg.sender, send dy of coin j to msg.sender
    """
    dy: uint256 = self._get_dy(i, j, dx)
    assert dy >= min_dy, "Exchange resulted in fewer coins than expected"
    assert dy > 0, "zero output"
    assert extcall IERC20(self.coins[i]).transferFrom(msg.sender, self, dx, default_return_value=True)
    self.balances[i] += dx
    self.balances[j] -= dy
    assert extcall IERC20(self.coins[j]).transfer(msg.sender, dy, default_return_value=True)
    log TokenExchange(buyer=msg.sender, sold_id=i, tokens_sold=dx, bought_id=j, tokens_bought=dy)
    return dy
