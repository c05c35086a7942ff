# pragma version ~=0.4.3
"""
@title Settable index price feed (L2PriceFeed-compatible reads)
@notice `getPrice(bytes32 key)` returns the index price of a market in 1e18 quote per base,
        as the Amm's `getUnderlyingPrice` expects. The owner (a test or demo script) sets it.
        `getTwapPrice` returns the current price: the funding maths only needs a value, and
        tests that exercise funding set the price they want.
"""

event PriceFeedDataSet:
    key: bytes32
    price: uint256
    timestamp: uint256
    roundId: uint256

owner: public(address)
prices: HashMap[bytes32, uint256]
rounds: HashMap[bytes32, uint256]


@deploy
def __init__():
    self.owner = msg.sender


@external
def setPrice(key: bytes32, price: uint256):
    """@notice set the index price of `key` (1e18 quote per base; 0 is allowed, for tests)"""
    assert msg.sender == self.owner, "PerpFiOwnableUpgrade: caller is not the owner"
    self.prices[key] = price
    self.rounds[key] += 1
    log PriceFeedDataSet(key=key, price=price, timestamp=block.timestamp, roundId=self.rounds[key])


@internal
@view
def _price(key: bytes32) -> uint256:
    assert self.rounds[key] != 0, "key not existed"
    return self.prices[key]


@external
@view
def getPrice(key: bytes32) -> uint256:
    """@notice latest index price of `key`, 1e18; reverts "key not existed" if never set"""
    return self._price(key)


@external
@view
def getTwapPrice(key: bytes32, interval: uint256) -> uint256:
    """@notice index TWAP over `interval` seconds; this feed returns the latest price, 1e18"""
    return self._price(key)
