# pragma version ~=0.4.3
"""
@title Perp v1 virtual AMM (reference implementation)
@notice A virtual x*y=k market between a quote asset (e.g. USDC) and a base asset that
        only exists as a number. Same selectors, encodings, rounding, events and revert
        strings as Perpetual Protocol v1's Amm.sol (see docs/PROTOCOLS.md A.6).
        Units: every amount and price is 18-decimal fixed point (1e18 = 1 token or
        1 quote per base), whatever the quote token's own decimals.
        Directions (`Dir`, ABI uint8) are seen from the AMM: ADD_TO_AMM = 0, REMOVE_FROM_AMM = 1.
        Only the counter party (the ClearingHouse) may swap or settle funding.
"""

from . import _math as m

interface IPriceFeed:
    def getPrice(key: bytes32) -> uint256: view
    def getTwapPrice(key: bytes32, interval: uint256) -> uint256: view

ADD_TO_AMM: constant(uint8) = 0
REMOVE_FROM_AMM: constant(uint8) = 1

# getInputTwap / getOutputTwap always look back this far (15 minutes)
TWAP_WINDOW: constant(uint256) = 900
# |spot - oracle| / oracle at or above this is "over the spread limit" (10 %)
MAX_ORACLE_SPREAD_RATIO: public(constant(uint256)) = 10**17
# a net position below this many base wei is rounding noise when settling a shutdown
IGNORABLE_DIGIT_FOR_SHUTDOWN: constant(uint256) = 100
# loop bound of the TWAP walk; one snapshot per block means ~900 inside a 15-minute window
MAX_TWAP_STEPS: constant(uint256) = 4096

# what a TWAP averages, per snapshot
TWAP_SPOT: constant(uint8) = 0  # quote reserve / base reserve
TWAP_INPUT: constant(uint8) = 1  # base amount for a quote input (getInputPriceWithReserves)
TWAP_OUTPUT: constant(uint8) = 2  # quote amount for a base input (getOutputPriceWithReserves)


struct ReserveSnapshot:
    quoteAssetReserve: uint256
    baseAssetReserve: uint256
    timestamp: uint256
    blockNumber: uint256


event SwapInput:
    dir: uint8
    quoteAssetAmount: uint256
    baseAssetAmount: uint256

event SwapOutput:
    dir: uint8
    quoteAssetAmount: uint256
    baseAssetAmount: uint256

event FundingRateUpdated:
    rate: int256
    underlyingPrice: uint256

event ReserveSnapshotted:
    quoteAssetReserve: uint256
    baseAssetReserve: uint256
    timestamp: uint256

event Shutdown:
    settlementPrice: uint256

event PriceFeedUpdated:
    priceFeed: address


owner: public(address)
counterParty: address

quoteAsset: public(address)
priceFeed: public(address)
priceFeedKey: public(bytes32)
open: public(bool)

# 1e18 fixed point (bare uint256 getters, as the real public Decimal state variables)
quoteAssetReserve: public(uint256)
baseAssetReserve: public(uint256)
tradeLimitRatio: public(uint256)
fluctuationLimitRatio: public(uint256)
tollRatio: public(uint256)
spreadRatio: public(uint256)
# traders' net base position (base wei, > 0 net long) and the last funding rate (1e18)
totalPositionSize: public(int256)
fundingRate: public(int256)

# seconds
spotPriceTwapInterval: public(uint256)
fundingPeriod: public(uint256)
fundingBufferPeriod: public(uint256)
nextFundingTime: public(uint256)

snapshots: HashMap[uint256, ReserveSnapshot]
snapshotCount: uint256

settlementPrice: uint256
initialQuoteReserve: uint256
initialBaseReserve: uint256


@deploy
def __init__(
    _quoteAssetReserve: uint256,
    _baseAssetReserve: uint256,
    _tradeLimitRatio: uint256,
    _fundingPeriod: uint256,
    _priceFeed: address,
    _priceFeedKey: bytes32,
    _quoteAsset: address,
    _fluctuationLimitRatio: uint256,
    _tollRatio: uint256,
    _spreadRatio: uint256,
):
    """
    @param _quoteAssetReserve initial virtual quote reserve, 1e18
    @param _baseAssetReserve initial virtual base reserve, 1e18 (spot = quote / base)
    @param _tradeLimitRatio max share of a reserve one swap may remove, 1e18 = 100 %
    @param _fundingPeriod seconds between funding settlements
    @param _fluctuationLimitRatio max per-block price move, 1e18 = 100 %; 0 disables the guard
    @param _tollRatio fee to the toll pool, 1e18 = 100 % of the notional
    @param _spreadRatio fee to the insurance fund, 1e18 = 100 % of the notional
    """
    assert (
        _quoteAssetReserve != 0
        and _tradeLimitRatio != 0
        and _baseAssetReserve != 0
        and _fundingPeriod != 0
        and _priceFeed != empty(address)
        and _quoteAsset != empty(address)
    ), "invalid input"
    self.owner = msg.sender
    self.quoteAssetReserve = _quoteAssetReserve
    self.baseAssetReserve = _baseAssetReserve
    self.initialQuoteReserve = _quoteAssetReserve
    self.initialBaseReserve = _baseAssetReserve
    self.tradeLimitRatio = _tradeLimitRatio
    self.tollRatio = _tollRatio
    self.spreadRatio = _spreadRatio
    self.fluctuationLimitRatio = _fluctuationLimitRatio
    self.fundingPeriod = _fundingPeriod
    self.fundingBufferPeriod = _fundingPeriod // 2
    self.spotPriceTwapInterval = 3600
    self.priceFeedKey = _priceFeedKey
    self.quoteAsset = _quoteAsset
    self.priceFeed = _priceFeed
    self.snapshots[0] = ReserveSnapshot(
        quoteAssetReserve=_quoteAssetReserve,
        baseAssetReserve=_baseAssetReserve,
        timestamp=block.timestamp,
        blockNumber=block.number,
    )
    self.snapshotCount = 1
    log ReserveSnapshotted(
        quoteAssetReserve=_quoteAssetReserve, baseAssetReserve=_baseAssetReserve, timestamp=block.timestamp
    )


# ---------------------------------------------------------------------------------------------
# pricing maths (pure)
# ---------------------------------------------------------------------------------------------

@internal
@pure
def _dir(dir: uint8) -> uint8:
    # an out-of-range enum is rejected by the real ABI decoder (empty revert)
    assert dir <= REMOVE_FROM_AMM
    return dir


@internal
@pure
def _input_price(dir_of_quote: uint8, quote_amount: uint256, quote_pool: uint256, base_pool: uint256) -> uint256:
    """
    @notice base amount (1e18) a trader gets for adding (ADD) or pays for removing (REMOVE)
            `quote_amount` of quote; 1 wei in the AMM's favour when k*1e18 is not a multiple
            of the quote reserve after the trade.
    """
    if quote_amount == 0:
        return 0
    k: uint256 = m.mul_d(quote_pool, base_pool)
    quote_after: uint256 = 0
    if dir_of_quote == ADD_TO_AMM:
        quote_after = quote_pool + quote_amount
    else:
        quote_after = quote_pool - quote_amount
    assert quote_after != 0, "quote asset after is 0"
    bought: uint256 = m.sabs(m.signed(m.div_d(k, quote_after)) - m.signed(base_pool))
    if (k * m.UNIT) % quote_after != 0:
        if dir_of_quote == ADD_TO_AMM:
            bought -= 1
        else:
            bought += 1
    return bought


@internal
@pure
def _output_price(dir_of_base: uint8, base_amount: uint256, quote_pool: uint256, base_pool: uint256) -> uint256:
    """
    @notice quote amount (1e18) a trader gets for adding (ADD, closing a long) or pays for
            removing (REMOVE, closing a short) `base_amount` of base; 1 wei in the AMM's
            favour when k*1e18 is not a multiple of the base reserve after the trade.
    """
    if base_amount == 0:
        return 0
    k: uint256 = m.mul_d(quote_pool, base_pool)
    base_after: uint256 = 0
    if dir_of_base == ADD_TO_AMM:
        base_after = base_pool + base_amount
    else:
        base_after = base_pool - base_amount
    assert base_after != 0, "base asset after is 0"
    sold: uint256 = m.sabs(m.signed(m.div_d(k, base_after)) - m.signed(quote_pool))
    if (k * m.UNIT) % base_after != 0:
        if dir_of_base == ADD_TO_AMM:
            sold -= 1
        else:
            sold += 1
    return sold


@internal
@pure
def _snapshot_value(kind: uint8, dir: uint8, amount: uint256, snap: ReserveSnapshot) -> uint256:
    if kind == TWAP_SPOT:
        return m.div_d(snap.quoteAssetReserve, snap.baseAssetReserve)
    if kind == TWAP_INPUT:
        return self._input_price(dir, amount, snap.quoteAssetReserve, snap.baseAssetReserve)
    return self._output_price(dir, amount, snap.quoteAssetReserve, snap.baseAssetReserve)


# ---------------------------------------------------------------------------------------------
# snapshots and TWAP
# ---------------------------------------------------------------------------------------------

@internal
@view
def _twap(kind: uint8, dir: uint8, amount: uint256, interval: uint256) -> uint256:
    """
    @notice time-weighted average of a per-snapshot value over the last `interval` seconds.
            Each snapshot's value is weighted by how long it was current, the oldest one cut
            at now - interval, and the sum divided by `interval`. With a single snapshot, or
            when the latest snapshot is at or before now - interval, the latest value is
            returned; when the history is shorter than `interval`, the sum is divided by the
            period it covers.
    """
    idx: uint256 = self.snapshotCount - 1
    snap: ReserveSnapshot = self.snapshots[idx]
    value: uint256 = self._snapshot_value(kind, dir, amount, snap)
    if interval == 0:
        return value
    base_ts: uint256 = block.timestamp - interval
    if idx == 0 or snap.timestamp <= base_ts:
        return value

    previous_ts: uint256 = snap.timestamp
    period: uint256 = block.timestamp - previous_ts
    weighted: uint256 = value * period
    for _: uint256 in range(MAX_TWAP_STEPS):
        if idx == 0:
            # history shorter than the interval
            return weighted // period
        idx -= 1
        snap = self.snapshots[idx]
        value = self._snapshot_value(kind, dir, amount, snap)
        if snap.timestamp <= base_ts:
            weighted += value * (previous_ts - base_ts)
            return weighted // interval
        step: uint256 = previous_ts - snap.timestamp
        weighted += value * step
        period += step
        previous_ts = snap.timestamp
    raise "twap: too many snapshots"


@internal
def _add_reserve_snapshot():
    """@notice record the reserves; a second change in the same block overwrites the last snapshot"""
    last: uint256 = self.snapshotCount - 1
    if self.snapshots[last].blockNumber == block.number:
        self.snapshots[last].quoteAssetReserve = self.quoteAssetReserve
        self.snapshots[last].baseAssetReserve = self.baseAssetReserve
    else:
        self.snapshots[last + 1] = ReserveSnapshot(
            quoteAssetReserve=self.quoteAssetReserve,
            baseAssetReserve=self.baseAssetReserve,
            timestamp=block.timestamp,
            blockNumber=block.number,
        )
        self.snapshotCount = last + 2
    log ReserveSnapshotted(
        quoteAssetReserve=self.quoteAssetReserve, baseAssetReserve=self.baseAssetReserve, timestamp=block.timestamp
    )


@internal
@view
def _price_boundaries_of_last_block() -> (uint256, uint256):
    """@notice (upper, lower) spot limits around the last snapshot taken before this block, 1e18"""
    idx: uint256 = self.snapshotCount - 1
    if self.snapshots[idx].blockNumber == block.number and idx > 0:
        idx -= 1
    last_price: uint256 = m.div_d(self.snapshots[idx].quoteAssetReserve, self.snapshots[idx].baseAssetReserve)
    ratio: uint256 = self.fluctuationLimitRatio
    return m.mul_d(last_price, m.UNIT + ratio), m.mul_d(last_price, m.UNIT - ratio)


@internal
@view
def _check_fluctuation(dir_of_quote: uint8, quote_amount: uint256, base_amount: uint256, can_over: bool):
    """
    @notice a reserve update needs the current price inside the previous block's limits;
            unless `can_over` (closes and liquidations), the post-trade price must be too.
            So at most one over-limit close or liquidation per block.
    """
    if self.fluctuationLimitRatio == 0:
        return
    upper: uint256 = 0
    lower: uint256 = 0
    upper, lower = self._price_boundaries_of_last_block()
    price: uint256 = m.div_d(self.quoteAssetReserve, self.baseAssetReserve)
    assert price <= upper and price >= lower, "price is already over fluctuation limit"
    if not can_over:
        if dir_of_quote == ADD_TO_AMM:
            price = m.div_d(self.quoteAssetReserve + quote_amount, self.baseAssetReserve - base_amount)
        else:
            price = m.div_d(self.quoteAssetReserve - quote_amount, self.baseAssetReserve + base_amount)
        assert price <= upper and price >= lower, "price is over fluctuation limit"


@internal
def _update_reserve(dir_of_quote: uint8, quote_amount: uint256, base_amount: uint256, can_over: bool):
    self._check_fluctuation(dir_of_quote, quote_amount, base_amount, can_over)
    if dir_of_quote == ADD_TO_AMM:
        self.quoteAssetReserve += quote_amount
        self.baseAssetReserve -= base_amount
        self.totalPositionSize += m.signed(base_amount)
    else:
        self.quoteAssetReserve -= quote_amount
        self.baseAssetReserve += base_amount
        self.totalPositionSize -= m.signed(base_amount)
    self._add_reserve_snapshot()


@internal
@view
def _only_counter_party_when_open():
    assert self.open, "amm was closed"
    assert msg.sender == self.counterParty, "caller is not counterParty"


@internal
@view
def _only_owner():
    assert msg.sender == self.owner, "PerpFiOwnableUpgrade: caller is not the owner"


# ---------------------------------------------------------------------------------------------
# ClearingHouse-only mutations
# ---------------------------------------------------------------------------------------------

@external
def swapInput(
    _dirOfQuote: uint8,
    _quoteAssetAmount: m.Decimal,
    _baseAssetAmountLimit: m.Decimal,
    _canOverFluctuationLimit: bool,
) -> m.Decimal:
    """
    @notice trade a quote amount: ADD_TO_AMM opens/increases a long, REMOVE_FROM_AMM a short
    @param _quoteAssetAmount quote in or out, 1e18
    @param _baseAssetAmountLimit 0 = none; min base received (ADD) or max base owed (REMOVE), 1e18
    @param _canOverFluctuationLimit the post-trade price may leave the block's limits (partial closes)
    @return base amount exchanged, 1e18
    """
    self._only_counter_party_when_open()
    dir: uint8 = self._dir(_dirOfQuote)
    quote_amount: uint256 = _quoteAssetAmount.d
    if quote_amount == 0:
        return m.Decimal(d=0)
    if dir == REMOVE_FROM_AMM:
        assert m.mul_d(self.quoteAssetReserve, self.tradeLimitRatio) >= quote_amount, "over trading limit"

    base_amount: uint256 = self._input_price(dir, quote_amount, self.quoteAssetReserve, self.baseAssetReserve)
    limit: uint256 = _baseAssetAmountLimit.d
    if limit != 0:
        if dir == ADD_TO_AMM:
            assert base_amount >= limit, "Less than minimal base token"
        else:
            assert base_amount <= limit, "More than maximal base token"

    self._update_reserve(dir, quote_amount, base_amount, _canOverFluctuationLimit)
    log SwapInput(dir=dir, quoteAssetAmount=quote_amount, baseAssetAmount=base_amount)
    return m.Decimal(d=base_amount)


@external
def swapOutput(_dirOfBase: uint8, _baseAssetAmount: m.Decimal, _quoteAssetAmountLimit: m.Decimal) -> m.Decimal:
    """
    @notice trade a base amount: ADD_TO_AMM closes a long, REMOVE_FROM_AMM closes a short;
            may always leave the block's fluctuation limits (once per block)
    @param _quoteAssetAmountLimit 0 = none; min quote received (ADD) or max quote paid (REMOVE), 1e18
    @return quote amount exchanged, 1e18
    """
    self._only_counter_party_when_open()
    dir: uint8 = self._dir(_dirOfBase)
    base_amount: uint256 = _baseAssetAmount.d
    if base_amount == 0:
        return m.Decimal(d=0)
    if dir == REMOVE_FROM_AMM:
        assert m.mul_d(self.baseAssetReserve, self.tradeLimitRatio) >= base_amount, "over trading limit"

    quote_amount: uint256 = self._output_price(dir, base_amount, self.quoteAssetReserve, self.baseAssetReserve)
    dir_of_quote: uint8 = REMOVE_FROM_AMM
    if dir == REMOVE_FROM_AMM:
        dir_of_quote = ADD_TO_AMM
    limit: uint256 = _quoteAssetAmountLimit.d
    if limit != 0:
        if dir_of_quote == REMOVE_FROM_AMM:
            assert quote_amount >= limit, "Less than minimal quote token"
        else:
            assert quote_amount <= limit, "More than maximal quote token"

    self._update_reserve(dir_of_quote, quote_amount, base_amount, True)
    log SwapOutput(dir=dir, quoteAssetAmount=quote_amount, baseAssetAmount=base_amount)
    return m.Decimal(d=quote_amount)


@external
def settleFunding() -> m.SignedDecimal:
    """
    @notice close a funding period: premium fraction =
            (market TWAP - index TWAP) * fundingPeriod / 1 day over `spotPriceTwapInterval`
    @return premium fraction, 1e18 quote per base (> 0: longs pay shorts)
    """
    self._only_counter_party_when_open()
    assert block.timestamp >= self.nextFundingTime, "settle funding too early"

    interval: uint256 = self.spotPriceTwapInterval
    underlying: uint256 = staticcall IPriceFeed(self.priceFeed).getTwapPrice(self.priceFeedKey, interval)
    premium: int256 = m.signed(self._twap(TWAP_SPOT, ADD_TO_AMM, 0, interval)) - m.signed(underlying)
    premium_fraction: int256 = premium * m.signed(self.fundingPeriod) // 86400

    self.fundingRate = m.sdiv_d(premium_fraction, m.signed(underlying))
    log FundingRateUpdated(rate=self.fundingRate, underlyingPrice=underlying)

    # the next funding time starts on an hour, and never sooner than half a period from now
    on_hour: uint256 = (self.nextFundingTime + self.fundingPeriod) // 3600 * 3600
    self.nextFundingTime = max(on_hour, block.timestamp + self.fundingBufferPeriod)
    return m.SignedDecimal(d=premium_fraction)


# ---------------------------------------------------------------------------------------------
# owner
# ---------------------------------------------------------------------------------------------

@external
def setCounterParty(_counterParty: address):
    """@notice the ClearingHouse allowed to swap and settle funding"""
    self._only_owner()
    self.counterParty = _counterParty


@external
def setOpen(_open: bool):
    """@notice open or close trading; opening schedules the next funding on an hour"""
    self._only_owner()
    if self.open == _open:
        return
    self.open = _open
    if _open:
        self.nextFundingTime = (block.timestamp + self.fundingPeriod) // 3600 * 3600


@external
def setFluctuationLimitRatio(_fluctuationLimitRatio: m.Decimal):
    """@notice 1e18 = 100 %; 0 disables the per-block price guard"""
    self._only_owner()
    self.fluctuationLimitRatio = _fluctuationLimitRatio.d


@external
def setTradeLimitRatio(_tradeLimitRatio: m.Decimal):
    """@notice max share of a reserve one swap may remove, 1e18 = 100 %"""
    self._only_owner()
    self.tradeLimitRatio = _tradeLimitRatio.d


@external
def setTollRatio(_tollRatio: m.Decimal):
    """@notice 1e18 = 100 % of the notional"""
    self._only_owner()
    self.tollRatio = _tollRatio.d


@external
def setSpreadRatio(_spreadRatio: m.Decimal):
    """@notice 1e18 = 100 % of the notional"""
    self._only_owner()
    self.spreadRatio = _spreadRatio.d


@external
def setSpotPriceTwapInterval(_interval: uint256):
    """@notice TWAP interval of the funding maths, seconds"""
    self._only_owner()
    assert _interval != 0, "can not set interval to 0"
    self.spotPriceTwapInterval = _interval


@external
def setPriceFeed(_priceFeed: address):
    self._only_owner()
    assert _priceFeed != empty(address), "invalid PriceFeed address"
    self.priceFeed = _priceFeed
    log PriceFeedUpdated(priceFeed=_priceFeed)


@external
def shutdown():
    """
    @notice close the market for good; settlement price = average entry price of the
            traders' net position (quote moved since launch / net base), 1e18
    """
    self._only_owner()
    initial_quote: int256 = m.sdiv_d(
        m.signed(m.mul_d(self.initialBaseReserve, self.initialQuoteReserve)), m.signed(self.initialBaseReserve)
    )
    net_size: uint256 = m.sabs(self.totalPositionSize)
    if net_size > IGNORABLE_DIGIT_FOR_SHUTDOWN:
        self.settlementPrice = m.div_d(m.sabs(initial_quote - m.signed(self.quoteAssetReserve)), net_size)
    self.open = False
    log Shutdown(settlementPrice=self.settlementPrice)


# ---------------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------------

@external
@view
def isOverFluctuationLimit(_dirOfBase: uint8, _baseAssetAmount: m.Decimal) -> bool:
    """@notice would swapping `_baseAssetAmount` base leave this block's price limits? (false when disabled)"""
    dir: uint8 = self._dir(_dirOfBase)
    if self.fluctuationLimitRatio == 0:
        return False
    upper: uint256 = 0
    lower: uint256 = 0
    upper, lower = self._price_boundaries_of_last_block()
    base_amount: uint256 = _baseAssetAmount.d
    quote_back: uint256 = self._output_price(dir, base_amount, self.quoteAssetReserve, self.baseAssetReserve)
    price: uint256 = 0
    if dir == REMOVE_FROM_AMM:
        price = m.div_d(self.quoteAssetReserve + quote_back, self.baseAssetReserve - base_amount)
    else:
        price = m.div_d(self.quoteAssetReserve - quote_back, self.baseAssetReserve + base_amount)
    return not (price <= upper and price >= lower)


@external
@view
def isOverSpreadLimit() -> bool:
    """@notice |spot - oracle| / oracle >= 10 %; reverts "underlying price is 0" """
    oracle: uint256 = staticcall IPriceFeed(self.priceFeed).getPrice(self.priceFeedKey)
    spot: uint256 = m.div_d(self.quoteAssetReserve, self.baseAssetReserve)
    return m.deviation_ratio(spot, oracle) >= MAX_ORACLE_SPREAD_RATIO


@external
@view
def getInputTwap(_dirOfQuote: uint8, _quoteAssetAmount: m.Decimal) -> m.Decimal:
    """@notice base amount for a quote input, averaged over the last 900 s of snapshots, 1e18"""
    return m.Decimal(d=self._twap(TWAP_INPUT, self._dir(_dirOfQuote), _quoteAssetAmount.d, TWAP_WINDOW))


@external
@view
def getOutputTwap(_dirOfBase: uint8, _baseAssetAmount: m.Decimal) -> m.Decimal:
    """@notice quote amount for a base input, averaged over the last 900 s of snapshots, 1e18"""
    return m.Decimal(d=self._twap(TWAP_OUTPUT, self._dir(_dirOfBase), _baseAssetAmount.d, TWAP_WINDOW))


@external
@view
def getInputPrice(_dirOfQuote: uint8, _quoteAssetAmount: m.Decimal) -> m.Decimal:
    """@notice base amount for a quote input at the current reserves, 1e18"""
    return m.Decimal(
        d=self._input_price(self._dir(_dirOfQuote), _quoteAssetAmount.d, self.quoteAssetReserve, self.baseAssetReserve)
    )


@external
@view
def getOutputPrice(_dirOfBase: uint8, _baseAssetAmount: m.Decimal) -> m.Decimal:
    """@notice quote amount for a base input at the current reserves, 1e18"""
    return m.Decimal(
        d=self._output_price(self._dir(_dirOfBase), _baseAssetAmount.d, self.quoteAssetReserve, self.baseAssetReserve)
    )


@external
@pure
def getInputPriceWithReserves(
    _dirOfQuote: uint8, _quoteAssetAmount: m.Decimal, _quoteAssetPoolAmount: m.Decimal, _baseAssetPoolAmount: m.Decimal
) -> m.Decimal:
    """@notice getInputPrice against the given reserves, 1e18"""
    return m.Decimal(
        d=self._input_price(
            self._dir(_dirOfQuote), _quoteAssetAmount.d, _quoteAssetPoolAmount.d, _baseAssetPoolAmount.d
        )
    )


@external
@pure
def getOutputPriceWithReserves(
    _dirOfBase: uint8, _baseAssetAmount: m.Decimal, _quoteAssetPoolAmount: m.Decimal, _baseAssetPoolAmount: m.Decimal
) -> m.Decimal:
    """@notice getOutputPrice against the given reserves, 1e18"""
    return m.Decimal(
        d=self._output_price(self._dir(_dirOfBase), _baseAssetAmount.d, _quoteAssetPoolAmount.d, _baseAssetPoolAmount.d)
    )


@external
@view
def getUnderlyingPrice() -> m.Decimal:
    """@notice index price from the price feed, 1e18 quote per base"""
    return m.Decimal(d=staticcall IPriceFeed(self.priceFeed).getPrice(self.priceFeedKey))


@external
@view
def getUnderlyingTwapPrice(_intervalInSeconds: uint256) -> m.Decimal:
    """@notice index TWAP from the price feed, 1e18 quote per base"""
    return m.Decimal(d=staticcall IPriceFeed(self.priceFeed).getTwapPrice(self.priceFeedKey, _intervalInSeconds))


@external
@view
def getSpotPrice() -> m.Decimal:
    """@notice quote reserve / base reserve, 1e18"""
    return m.Decimal(d=m.div_d(self.quoteAssetReserve, self.baseAssetReserve))


@external
@view
def getTwapPrice(_intervalInSeconds: uint256) -> m.Decimal:
    """@notice spot price averaged over `_intervalInSeconds` of snapshots, 1e18"""
    return m.Decimal(d=self._twap(TWAP_SPOT, ADD_TO_AMM, 0, _intervalInSeconds))


@external
@view
def getReserve() -> (m.Decimal, m.Decimal):
    """@notice (quote reserve, base reserve), 1e18"""
    return m.Decimal(d=self.quoteAssetReserve), m.Decimal(d=self.baseAssetReserve)


@external
@view
def reserveSnapshots(_index: uint256) -> (m.Decimal, m.Decimal, uint256, uint256):
    """@notice (quote reserve, base reserve, timestamp, block number) of snapshot `_index`"""
    assert _index < self.snapshotCount
    snap: ReserveSnapshot = self.snapshots[_index]
    return m.Decimal(d=snap.quoteAssetReserve), m.Decimal(d=snap.baseAssetReserve), snap.timestamp, snap.blockNumber


@external
@view
def getSnapshotLen() -> uint256:
    return self.snapshotCount


@external
@view
def getSettlementPrice() -> m.Decimal:
    """@notice price positions settle at after `shutdown`, 1e18 (0: everyone gets their margin back)"""
    return m.Decimal(d=self.settlementPrice)


@external
@view
def getBaseAssetDelta() -> m.SignedDecimal:
    """@notice traders' net base position, 1e18 (> 0: net long)"""
    return m.SignedDecimal(d=self.totalPositionSize)


@external
@view
def calcFee(_quoteAssetAmount: m.Decimal) -> (m.Decimal, m.Decimal):
    """@notice (toll, spread) charged on a notional, 1e18 quote"""
    amount: uint256 = _quoteAssetAmount.d
    return m.Decimal(d=m.mul_d(amount, self.tollRatio)), m.Decimal(d=m.mul_d(amount, self.spreadRatio))
