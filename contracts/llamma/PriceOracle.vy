# pragma version ~=0.4.3
"""
@title Settable collateral price oracle for LLAMMA markets
@notice Same read interface as the crvUSD oracles the AMM consumes: `price()` (view) and
        `price_w()` (state-changing read used on swaps). Both return the collateral price in
        borrowed-token units per collateral unit, 18 decimals (3000e18 = 3000 crvUSD per ETH),
        independent of either token's decimals. Only the owner may set it.
"""

event SetPrice:
    price: uint256

owner: public(address)
last_price: uint256


@deploy
def __init__(_price: uint256):
    """
    @param _price Initial price, 18 decimals
    """
    assert _price > 0, "Zero price"
    self.owner = msg.sender
    self.last_price = _price


@external
@view
def price() -> uint256:
    """
    @return Collateral price, 18 decimals
    """
    return self.last_price


@external
def price_w() -> uint256:
    """
    @notice Same value as price(); real oracles update their EMA here
    @return Collateral price, 18 decimals
    """
    return self.last_price


@external
def set_price(_price: uint256):
    """
    @param _price New price, 18 decimals (> 0)
    """
    assert msg.sender == self.owner, "only owner"
    assert _price > 0, "Zero price"
    self.last_price = _price
    log SetPrice(price=_price)
