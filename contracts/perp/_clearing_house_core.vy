# pragma version ~=0.4.3
"""
@title Perp v1 ClearingHouse core (module)
@notice Everything the v2.3 (HEAD) and v2.2 ClearingHouse variants share: positions,
        margin, funding, views, trading and the liquidation engine (`_liquidate`, whose two
        behaviour switches are the only differences between the versions). The deployable
        contracts `initializes:` this module, export its external functions and add their
        own `liquidate` entry points.
        Units: every amount is 18-decimal fixed point (1e18 = one quote token, one base unit
        or 100 %), whatever the quote token's decimals; token transfers round down to token
        units (DecimalERC20). Enums are ABI uint8: Side BUY=0/SELL=1, Dir ADD_TO_AMM=0 /
        REMOVE_FROM_AMM=1, PnlCalcOption SPOT_PRICE=0/TWAP=1/ORACLE=2.
        Not reproduced from the real contract: pausing, the GSN forwarder, referral codes,
        open-interest caps, the whitelist and liquidity migration (liquidityHistoryIndex is 0).
        Extension (not in the original): a per-market lockout (`lockoutRatio`): while
        |spot - index| / index >= lockoutRatio (0 = off), liquidations revert
        "price deviation lockout", and so do openings on the side that widens the gap.
"""

from . import _math as m
from . import _decimal_erc20 as erc20

interface IAmm:
    def quoteAsset() -> address: view
    def open() -> bool: view
    def getOutputPrice(_dirOfBase: uint8, _baseAssetAmount: m.Decimal) -> m.Decimal: view
    def getOutputTwap(_dirOfBase: uint8, _baseAssetAmount: m.Decimal) -> m.Decimal: view
    def getUnderlyingPrice() -> m.Decimal: view
    def getSpotPrice() -> m.Decimal: view
    def isOverSpreadLimit() -> bool: view
    def isOverFluctuationLimit(_dirOfBase: uint8, _baseAssetAmount: m.Decimal) -> bool: view
    def getBaseAssetDelta() -> m.SignedDecimal: view
    def getSettlementPrice() -> m.Decimal: view
    def calcFee(_quoteAssetAmount: m.Decimal) -> (m.Decimal, m.Decimal): view
    def swapInput(
        _dirOfQuote: uint8, _quoteAssetAmount: m.Decimal, _baseAssetAmountLimit: m.Decimal, _canOverFluctuationLimit: bool
    ) -> m.Decimal: nonpayable
    def swapOutput(_dirOfBase: uint8, _baseAssetAmount: m.Decimal, _quoteAssetAmountLimit: m.Decimal) -> m.Decimal: nonpayable
    def settleFunding() -> m.SignedDecimal: nonpayable

interface IInsuranceFund:
    def isExistedAmm(_amm: address) -> bool: view
    def withdraw(_quoteToken: address, _amount: m.Decimal): nonpayable

BUY: constant(uint8) = 0
SELL: constant(uint8) = 1
ADD_TO_AMM: constant(uint8) = 0
REMOVE_FROM_AMM: constant(uint8) = 1
SPOT_PRICE: constant(uint8) = 0
TWAP: constant(uint8) = 1
ORACLE: constant(uint8) = 2


# ABI shape of the real `Position` (6 words)
struct Position:
    size: m.SignedDecimal
    margin: m.Decimal
    openNotional: m.Decimal
    lastUpdatedCumulativePremiumFraction: m.SignedDecimal
    liquidityHistoryIndex: uint256
    blockNumber: uint256


# storage / internal form of a position (raw 1e18 integers)
struct Pos:
    size: int256  # base, > 0 long, < 0 short
    margin: uint256  # quote
    openNotional: uint256  # quote
    lastCpf: int256  # cumulative premium fraction at the last update
    liquidityHistoryIndex: uint256
    blockNumber: uint256


# outcome of a trade on a position, before tokens move
struct PositionResp:
    position: Pos
    exchangedQuoteAssetAmount: uint256  # quote sent (open) or received (close)
    badDebt: uint256  # |margin + pnl - funding| when negative
    exchangedPositionSize: int256  # base traded, signed like the position change
    fundingPayment: int256  # > 0: the trader paid
    realizedPnl: int256
    marginToVault: int256  # > 0: trader -> vault, < 0: vault -> trader
    unrealizedPnlAfter: int256


event MarginRatioChanged:
    marginRatio: uint256

event LiquidationFeeRatioChanged:
    liquidationFeeRatio: uint256

event BackstopLiquidityProviderChanged:
    account: indexed(address)
    isProvider: indexed(bool)

event LockoutRatioChanged:
    amm: indexed(address)
    ratio: uint256

event MarginChanged:
    sender: indexed(address)
    amm: indexed(address)
    amount: int256
    fundingPayment: int256

event PositionSettled:
    amm: indexed(address)
    trader: indexed(address)
    valueTransferred: uint256

event RestrictionModeEntered:
    amm: address
    blockNumber: uint256

event PositionChanged:
    trader: indexed(address)
    amm: indexed(address)
    margin: uint256
    positionNotional: uint256
    exchangedPositionSize: int256
    fee: uint256
    positionSizeAfter: int256
    realizedPnl: int256
    unrealizedPnlAfter: int256
    badDebt: uint256
    liquidationPenalty: uint256
    spotPrice: uint256
    fundingPayment: int256

event PositionLiquidated:
    trader: indexed(address)
    amm: indexed(address)
    positionNotional: uint256
    positionSize: uint256
    liquidationFee: uint256
    liquidator: address
    badDebt: uint256


owner: public(address)
# ratios, 1e18 = 100 % (bare uint256 getters, as the real public Decimal state variables)
initMarginRatio: public(uint256)
maintenanceMarginRatio: public(uint256)
liquidationFeeRatio: public(uint256)
partialLiquidationRatio: public(uint256)
insuranceFund: public(address)
feePool: public(address)
backstopLiquidityProviderMap: public(HashMap[address, bool])
# extension: per-market lockout threshold, 1e18 = 100 %, 0 = off
lockoutRatio: public(HashMap[address, uint256])

positionMap: HashMap[address, HashMap[address, Pos]]  # amm -> trader -> position
lastRestrictionBlock: HashMap[address, uint256]  # amm -> block of the last liquidation
cumulativePremiumFractions: HashMap[address, HashMap[uint256, int256]]  # amm -> index -> CPF
cumulativePremiumFractionCount: HashMap[address, uint256]
prepaidBadDebt: HashMap[address, uint256]  # quote token -> paid by the fund ahead of realisation


@deploy
def __init__(_initMarginRatio: uint256, _maintenanceMarginRatio: uint256, _liquidationFeeRatio: uint256, _insuranceFund: address):
    """
    @param _initMarginRatio 1e18 = 100 % (10 % = 1e17 allows 10x)
    @param _maintenanceMarginRatio 1e18 = 100 %
    @param _liquidationFeeRatio share of the liquidated notional charged, 1e18 = 100 % (half to the liquidator)
    """
    assert _insuranceFund != empty(address), "Invalid IInsuranceFund"
    self.owner = msg.sender
    self.initMarginRatio = _initMarginRatio
    self.maintenanceMarginRatio = _maintenanceMarginRatio
    self.liquidationFeeRatio = _liquidationFeeRatio
    self.insuranceFund = _insuranceFund


# ---------------------------------------------------------------------------------------------
# owner
# ---------------------------------------------------------------------------------------------

@internal
@view
def _only_owner():
    assert msg.sender == self.owner, "PerpFiOwnableUpgrade: caller is not the owner"


@external
def setLiquidationFeeRatio(_liquidationFeeRatio: m.Decimal):
    self._only_owner()
    self.liquidationFeeRatio = _liquidationFeeRatio.d
    log LiquidationFeeRatioChanged(liquidationFeeRatio=_liquidationFeeRatio.d)


@external
def setMaintenanceMarginRatio(_maintenanceMarginRatio: m.Decimal):
    self._only_owner()
    self.maintenanceMarginRatio = _maintenanceMarginRatio.d
    log MarginRatioChanged(marginRatio=_maintenanceMarginRatio.d)


@external
def setInitMarginRatio(_initMarginRatio: m.Decimal):
    """@notice not in the real contract (set once at initialisation there)"""
    self._only_owner()
    self.initMarginRatio = _initMarginRatio.d


@external
def setPartialLiquidationRatio(_ratio: m.Decimal):
    """@notice share of a position closed by a partial liquidation, 1e18 = 100 %"""
    self._only_owner()
    assert _ratio.d <= m.UNIT, "invalid partial liquidation ratio"
    self.partialLiquidationRatio = _ratio.d


@external
def setBackstopLiquidityProvider(account: address, isProvider: bool):
    """@notice allow `account` to liquidate positions that leave bad debt (v2.3 rule)"""
    self._only_owner()
    self.backstopLiquidityProviderMap[account] = isProvider
    log BackstopLiquidityProviderChanged(account=account, isProvider=isProvider)


@external
def setTollPool(_feePool: address):
    self._only_owner()
    self.feePool = _feePool


@external
def setLockoutRatio(amm: address, ratio: uint256):
    """@notice extension: lockout threshold of `amm`, 1e18 = 100 % (5 % = 5e16); 0 turns it off"""
    self._only_owner()
    self.lockoutRatio[amm] = ratio
    log LockoutRatioChanged(amm=amm, ratio=ratio)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

@internal
@view
def _require_amm(amm: address, want_open: bool):
    assert staticcall IInsuranceFund(self.insuranceFund).isExistedAmm(amm), "amm not found"
    if want_open:
        assert staticcall IAmm(amm).open(), "amm was closed"
    else:
        assert not staticcall IAmm(amm).open(), "amm is open"


@internal
@pure
def _require_position_size(size: int256):
    assert size != 0, "positionSize is 0"


@internal
@view
def _require_valid_token_amount(token: address, amount: uint256):
    assert erc20.to_uint(token, amount) != 0, "invalid token amount"


@internal
@pure
def _require_more_margin_ratio(margin_ratio: int256, base_ratio: uint256, larger_than_or_equal: bool):
    remaining: int256 = margin_ratio - m.signed(base_ratio)
    if larger_than_or_equal:
        assert remaining >= 0, "Margin ratio not meet criteria"
    else:
        assert remaining < 0, "Margin ratio not meet criteria"


@internal
@view
def _require_not_restriction_mode(amm: address):
    """@notice after a liquidation, whoever already traded this AMM in this block may not trade it again"""
    if block.number == self.lastRestrictionBlock[amm]:
        assert self.positionMap[amm][msg.sender].blockNumber != block.number, "only one action allowed"


@internal
@view
def _lockout_deviation(amm: address) -> (uint256, int256):
    """@notice (|spot - index| / index as in isOverSpreadLimit, spot - index), 1e18"""
    spot: uint256 = (staticcall IAmm(amm).getSpotPrice()).d
    index: uint256 = (staticcall IAmm(amm).getUnderlyingPrice()).d
    return m.deviation_ratio(spot, index), m.signed(spot) - m.signed(index)


@internal
@view
def _require_no_lockout(amm: address):
    """@notice extension: no liquidation while the market is in lockout"""
    ratio: uint256 = self.lockoutRatio[amm]
    if ratio == 0:
        return
    deviation: uint256 = 0
    gap: int256 = 0
    deviation, gap = self._lockout_deviation(amm)
    assert deviation < ratio, "price deviation lockout"


@internal
@view
def _require_no_widening_in_lockout(amm: address, side: uint8):
    """@notice extension: in lockout, no opening on the side that widens the spot/index gap"""
    ratio: uint256 = self.lockoutRatio[amm]
    if ratio == 0:
        return
    deviation: uint256 = 0
    gap: int256 = 0
    deviation, gap = self._lockout_deviation(amm)
    if deviation >= ratio:
        assert not ((gap > 0 and side == BUY) or (gap < 0 and side == SELL)), "price deviation lockout"


# ---------------------------------------------------------------------------------------------
# position maths (views)
# ---------------------------------------------------------------------------------------------

@internal
@view
def _latest_cpf(amm: address) -> int256:
    count: uint256 = self.cumulativePremiumFractionCount[amm]
    if count == 0:
        return 0
    return self.cumulativePremiumFractions[amm][count - 1]


@internal
@view
def _calc_remain_margin(amm: address, old: Pos, margin_delta: int256) -> (uint256, uint256, int256, int256):
    """
    @notice settle funding into the margin: remain = old.margin + margin_delta - funding,
            floored at 0 with the shortfall as bad debt
    @return (remain margin, bad debt, funding payment (> 0: trader pays), latest CPF)
    """
    latest_cpf: int256 = self._latest_cpf(amm)
    funding_payment: int256 = 0
    if old.size != 0:
        funding_payment = m.smul_d(latest_cpf - old.lastCpf, old.size)
    remain: int256 = margin_delta - funding_payment + m.signed(old.margin)
    if remain < 0:
        return 0, m.sabs(remain), funding_payment, latest_cpf
    return m.sabs(remain), 0, funding_payment, latest_cpf


@internal
@view
def _notional_and_pnl(amm: address, trader: address, option: uint8) -> (uint256, int256):
    """@notice (position notional, unrealized PnL) of the stored position at a price source"""
    pos: Pos = self.positionMap[amm][trader]
    size_abs: uint256 = m.sabs(pos.size)
    if size_abs == 0:
        return 0, 0
    dir: uint8 = ADD_TO_AMM
    if pos.size < 0:
        dir = REMOVE_FROM_AMM
    notional: uint256 = 0
    if option == TWAP:
        notional = (staticcall IAmm(amm).getOutputTwap(dir, m.Decimal(d=size_abs))).d
    elif option == SPOT_PRICE:
        notional = (staticcall IAmm(amm).getOutputPrice(dir, m.Decimal(d=size_abs))).d
    else:
        notional = m.mul_d(size_abs, (staticcall IAmm(amm).getUnderlyingPrice()).d)
    if pos.size < 0:
        return notional, m.signed(pos.openNotional) - m.signed(notional)
    return notional, m.signed(notional) - m.signed(pos.openNotional)


@internal
@view
def _preferred_pnl(amm: address, trader: address, max_pnl: bool) -> (int256, uint256):
    """@notice (PnL, notional) of SPOT if spot PnL > TWAP PnL (strict) else TWAP; MIN_PNL inverts"""
    spot_notional: uint256 = 0
    spot_pnl: int256 = 0
    twap_notional: uint256 = 0
    twap_pnl: int256 = 0
    spot_notional, spot_pnl = self._notional_and_pnl(amm, trader, SPOT_PRICE)
    twap_notional, twap_pnl = self._notional_and_pnl(amm, trader, TWAP)
    if max_pnl == (spot_pnl > twap_pnl):
        return spot_pnl, spot_notional
    return twap_pnl, twap_notional


@internal
@view
def _ratio_of(amm: address, pos: Pos, pnl: int256, notional: uint256) -> int256:
    remain: uint256 = 0
    bad_debt: uint256 = 0
    funding: int256 = 0
    cpf: int256 = 0
    remain, bad_debt, funding, cpf = self._calc_remain_margin(amm, pos, pnl)
    return m.sdiv_d(m.signed(remain) - m.signed(bad_debt), m.signed(notional))


@internal
@view
def _margin_ratio(amm: address, trader: address) -> int256:
    """@notice (margin + PnL - funding) / notional with the MAX_PNL of SPOT and TWAP, 1e18"""
    pos: Pos = self.positionMap[amm][trader]
    self._require_position_size(pos.size)
    pnl: int256 = 0
    notional: uint256 = 0
    pnl, notional = self._preferred_pnl(amm, trader, True)
    return self._ratio_of(amm, pos, pnl, notional)


@internal
@view
def _margin_ratio_by_option(amm: address, trader: address, option: uint8) -> int256:
    pos: Pos = self.positionMap[amm][trader]
    self._require_position_size(pos.size)
    notional: uint256 = 0
    pnl: int256 = 0
    notional, pnl = self._notional_and_pnl(amm, trader, option)
    return self._ratio_of(amm, pos, pnl, notional)


@internal
@view
def _free_collateral(amm: address, trader: address, margin_with_funding: uint256) -> int256:
    """
    @notice min(margin, margin + worse PnL) - IMR * (open notional of a long, notional of a short)
            for the STORED position (the caller has not written the new margin yet)
    """
    pos: Pos = self.positionMap[amm][trader]
    pnl: int256 = 0
    notional: uint256 = 0
    pnl, notional = self._preferred_pnl(amm, trader, False)
    min_collateral: int256 = pnl + m.signed(margin_with_funding)
    if pnl > 0:
        min_collateral = m.signed(margin_with_funding)
    requirement: uint256 = m.mul_d(notional, self.initMarginRatio)
    if pos.size > 0:
        requirement = m.mul_d(pos.openNotional, self.initMarginRatio)
    return min_collateral - m.signed(requirement)


@internal
@pure
def _to_position(pos: Pos) -> Position:
    return Position(
        size=m.SignedDecimal(d=pos.size),
        margin=m.Decimal(d=pos.margin),
        openNotional=m.Decimal(d=pos.openNotional),
        lastUpdatedCumulativePremiumFraction=m.SignedDecimal(d=pos.lastCpf),
        liquidityHistoryIndex=pos.liquidityHistoryIndex,
        blockNumber=pos.blockNumber,
    )


# ---------------------------------------------------------------------------------------------
# token movements
# ---------------------------------------------------------------------------------------------

@internal
def _withdraw(token: address, receiver: address, amount: uint256):
    """@notice pay from the vault; a shortfall is drawn from the insurance fund as prepaid bad debt"""
    balance: uint256 = erc20.balance_of(token, self)
    if balance < amount:
        shortage: uint256 = amount - balance
        self.prepaidBadDebt[token] += shortage
        extcall IInsuranceFund(self.insuranceFund).withdraw(token, m.Decimal(d=shortage))
    erc20.transfer(token, receiver, amount)


@internal
def _realize_bad_debt(token: address, bad_debt: uint256):
    prepaid: uint256 = self.prepaidBadDebt[token]
    if prepaid > bad_debt:
        self.prepaidBadDebt[token] = prepaid - bad_debt
    else:
        extcall IInsuranceFund(self.insuranceFund).withdraw(token, m.Decimal(d=bad_debt - prepaid))
        self.prepaidBadDebt[token] = 0


@internal
def _transfer_to_insurance_fund(token: address, amount: uint256):
    erc20.transfer(token, self.insuranceFund, min(erc20.balance_of(token, self), amount))


@internal
def _transfer_fee(trader: address, amm: address, notional: uint256) -> uint256:
    """@notice charge spread (to the insurance fund) and toll (to the fee pool); returns the total, 1e18"""
    toll: m.Decimal = empty(m.Decimal)
    spread: m.Decimal = empty(m.Decimal)
    toll, spread = staticcall IAmm(amm).calcFee(m.Decimal(d=notional))
    if toll.d == 0 and spread.d == 0:
        return 0
    token: address = staticcall IAmm(amm).quoteAsset()
    if spread.d > 0:
        erc20.transfer_from(token, trader, self.insuranceFund, spread.d)
    if toll.d > 0:
        assert self.feePool != empty(address), "Invalid feePool"
        erc20.transfer_from(token, trader, self.feePool, toll.d)
    return toll.d + spread.d


# ---------------------------------------------------------------------------------------------
# trading internals
# ---------------------------------------------------------------------------------------------

@internal
def _swap_input(amm: address, side: uint8, quote_amount: uint256, base_limit: uint256, can_over: bool) -> int256:
    """@notice trade quote for base; returns the signed base change of the trader (< 0 for SELL)"""
    dir: uint8 = ADD_TO_AMM
    if side == SELL:
        dir = REMOVE_FROM_AMM
    base: int256 = m.signed(
        (extcall IAmm(amm).swapInput(dir, m.Decimal(d=quote_amount), m.Decimal(d=base_limit), can_over)).d
    )
    if dir == REMOVE_FROM_AMM:
        return -base
    return base


@internal
def _increase_position(amm: address, side: uint8, open_notional: uint256, min_size: uint256, leverage: uint256) -> PositionResp:
    trader: address = msg.sender
    old: Pos = self.positionMap[amm][trader]
    exchanged: int256 = self._swap_input(amm, side, open_notional, min_size, False)
    added_margin: uint256 = m.div_d(open_notional, leverage)
    remain: uint256 = 0
    bad_debt: uint256 = 0
    funding: int256 = 0
    cpf: int256 = 0
    remain, bad_debt, funding, cpf = self._calc_remain_margin(amm, old, m.signed(added_margin))
    # PnL of the position as stored (before this trade) at the post-trade reserves, as in Perp
    notional: uint256 = 0
    pnl: int256 = 0
    notional, pnl = self._notional_and_pnl(amm, trader, SPOT_PRICE)
    return PositionResp(
        position=Pos(
            size=old.size + exchanged,
            margin=remain,
            openNotional=old.openNotional + open_notional,
            lastCpf=cpf,
            liquidityHistoryIndex=old.liquidityHistoryIndex,
            blockNumber=block.number,
        ),
        exchangedQuoteAssetAmount=open_notional,
        badDebt=0,
        exchangedPositionSize=exchanged,
        fundingPayment=funding,
        realizedPnl=0,
        marginToVault=m.signed(added_margin),
        unrealizedPnlAfter=pnl,
    )


@internal
def _close_position_internal(amm: address, trader: address, quote_limit: uint256) -> PositionResp:
    """@notice close the whole position at the vAMM; the stored position is cleared (block kept)"""
    old: Pos = self.positionMap[amm][trader]
    self._require_position_size(old.size)
    notional: uint256 = 0
    pnl: int256 = 0
    notional, pnl = self._notional_and_pnl(amm, trader, SPOT_PRICE)
    remain: uint256 = 0
    bad_debt: uint256 = 0
    funding: int256 = 0
    cpf: int256 = 0
    remain, bad_debt, funding, cpf = self._calc_remain_margin(amm, old, pnl)
    dir: uint8 = REMOVE_FROM_AMM
    if old.size > 0:
        dir = ADD_TO_AMM
    quote: uint256 = (
        extcall IAmm(amm).swapOutput(dir, m.Decimal(d=m.sabs(old.size)), m.Decimal(d=quote_limit))
    ).d
    self.positionMap[amm][trader] = Pos(
        size=0, margin=0, openNotional=0, lastCpf=0, liquidityHistoryIndex=0, blockNumber=block.number
    )
    return PositionResp(
        position=empty(Pos),
        exchangedQuoteAssetAmount=quote,
        badDebt=bad_debt,
        exchangedPositionSize=-old.size,
        fundingPayment=funding,
        realizedPnl=pnl,
        marginToVault=-m.signed(remain),
        unrealizedPnlAfter=0,
    )


@internal
def _close_and_open_reverse_position(
    amm: address, side: uint8, trader: address, quote_amount: uint256, leverage: uint256, base_limit: uint256
) -> PositionResp:
    closed: PositionResp = self._close_position_internal(amm, trader, 0)
    assert closed.badDebt == 0, "reduce an underwater position"
    open_notional: uint256 = m.mul_d(quote_amount, leverage) - closed.exchangedQuoteAssetAmount
    if m.div_d(open_notional, leverage) == 0:
        return closed
    closed_size: uint256 = m.sabs(closed.exchangedPositionSize)
    limit: uint256 = 0
    if base_limit > closed_size:
        limit = base_limit - closed_size
    opened: PositionResp = self._increase_position(amm, side, open_notional, limit, leverage)
    return PositionResp(
        position=opened.position,
        exchangedQuoteAssetAmount=closed.exchangedQuoteAssetAmount + opened.exchangedQuoteAssetAmount,
        badDebt=closed.badDebt + opened.badDebt,
        exchangedPositionSize=closed.exchangedPositionSize + opened.exchangedPositionSize,
        fundingPayment=closed.fundingPayment + opened.fundingPayment,
        realizedPnl=closed.realizedPnl + opened.realizedPnl,
        marginToVault=closed.marginToVault + opened.marginToVault,
        unrealizedPnlAfter=0,
    )


@internal
def _open_reverse_position(
    amm: address,
    side: uint8,
    trader: address,
    quote_amount: uint256,
    leverage: uint256,
    base_limit: uint256,
    can_over: bool,
) -> PositionResp:
    """@notice trade against the position: reduce it if its notional is larger, else close and flip"""
    open_notional: uint256 = m.mul_d(quote_amount, leverage)
    old_notional: uint256 = 0
    pnl: int256 = 0
    old_notional, pnl = self._notional_and_pnl(amm, trader, SPOT_PRICE)
    if old_notional <= open_notional:
        return self._close_and_open_reverse_position(amm, side, trader, quote_amount, leverage, base_limit)

    old: Pos = self.positionMap[amm][trader]
    exchanged: int256 = self._swap_input(amm, side, open_notional, base_limit, can_over)
    # realized PnL = unrealized PnL * closed share
    realized: int256 = m.sdiv_d(m.smul_d(pnl, m.signed(m.sabs(exchanged))), m.signed(m.sabs(old.size)))
    remain: uint256 = 0
    bad_debt: uint256 = 0
    funding: int256 = 0
    cpf: int256 = 0
    remain, bad_debt, funding, cpf = self._calc_remain_margin(amm, old, realized)
    pnl_after: int256 = pnl - realized
    # long: pnl = notional - openNotional; short: pnl = openNotional - notional
    remain_open_notional: int256 = pnl_after + m.signed(old_notional) - m.signed(open_notional)
    if old.size > 0:
        remain_open_notional = m.signed(old_notional) - m.signed(open_notional) - pnl_after
    assert remain_open_notional > 0, "value of openNotional <= 0"
    return PositionResp(
        position=Pos(
            size=old.size + exchanged,
            margin=remain,
            openNotional=m.sabs(remain_open_notional),
            lastCpf=cpf,
            liquidityHistoryIndex=old.liquidityHistoryIndex,
            blockNumber=block.number,
        ),
        exchangedQuoteAssetAmount=open_notional,
        badDebt=bad_debt,
        exchangedPositionSize=exchanged,
        fundingPayment=funding,
        realizedPnl=realized,
        marginToVault=0,
        unrealizedPnlAfter=pnl_after,
    )


@internal
def _log_position_changed(trader: address, amm: address, resp: PositionResp, fee: uint256, penalty: uint256):
    log PositionChanged(
        trader=trader,
        amm=amm,
        margin=resp.position.margin,
        positionNotional=resp.exchangedQuoteAssetAmount,
        exchangedPositionSize=resp.exchangedPositionSize,
        fee=fee,
        positionSizeAfter=resp.position.size,
        realizedPnl=resp.realizedPnl,
        unrealizedPnlAfter=resp.unrealizedPnlAfter,
        badDebt=resp.badDebt,
        liquidationPenalty=penalty,
        spotPrice=(staticcall IAmm(amm).getSpotPrice()).d,
        fundingPayment=resp.fundingPayment,
    )


# ---------------------------------------------------------------------------------------------
# trader actions
# ---------------------------------------------------------------------------------------------

@external
@nonreentrant
def openPosition(
    _amm: address,
    _side: uint8,
    _quoteAssetAmount: m.Decimal,
    _leverage: m.Decimal,
    _baseAssetAmountLimit: m.Decimal,
):
    """
    @notice open, increase, reduce or flip a position
    @param _side BUY (0) long, SELL (1) short
    @param _quoteAssetAmount margin put in, 1e18 quote; the notional is margin * leverage
    @param _leverage 1e18 = 1x; 1 / leverage must be >= initMarginRatio
    @param _baseAssetAmountLimit 0 = none; min base bought (BUY) or max base sold (SELL), 1e18
    """
    self._require_amm(_amm, True)
    assert _side <= SELL
    token: address = staticcall IAmm(_amm).quoteAsset()
    self._require_valid_token_amount(token, _quoteAssetAmount.d)
    assert _leverage.d != 0, "input is 0"
    self._require_more_margin_ratio(m.sdiv_d(m.SUNIT, m.signed(_leverage.d)), self.initMarginRatio, True)
    self._require_not_restriction_mode(_amm)
    self._require_no_widening_in_lockout(_amm, _side)

    trader: address = msg.sender
    old_size: int256 = self.positionMap[_amm][trader].size
    is_new: bool = old_size == 0
    resp: PositionResp = empty(PositionResp)
    if is_new or (old_size > 0) == (_side == BUY):
        resp = self._increase_position(
            _amm, _side, m.mul_d(_quoteAssetAmount.d, _leverage.d), _baseAssetAmountLimit.d, _leverage.d
        )
    else:
        resp = self._open_reverse_position(
            _amm, _side, trader, _quoteAssetAmount.d, _leverage.d, _baseAssetAmountLimit.d, False
        )

    self.positionMap[_amm][trader] = resp.position
    # opening exactly the opposite of the old position closes it: no ratio to check then
    if not is_new and resp.position.size != 0:
        self._require_more_margin_ratio(self._margin_ratio(_amm, trader), self.maintenanceMarginRatio, True)
    # a trader may not use bad debt to draw extra tokens from the insurance fund
    assert resp.badDebt == 0, "bad debt"

    if resp.marginToVault > 0:
        erc20.transfer_from(token, trader, self, m.sabs(resp.marginToVault))
    elif resp.marginToVault < 0:
        self._withdraw(token, trader, m.sabs(resp.marginToVault))

    fee: uint256 = self._transfer_fee(trader, _amm, resp.exchangedQuoteAssetAmount)
    self._log_position_changed(trader, _amm, resp, fee, 0)


@external
@nonreentrant
def closePosition(_amm: address, _quoteAssetAmountLimit: m.Decimal):
    """
    @notice close the caller's position (only partialLiquidationRatio of it when the whole
            close would break the fluctuation limit)
    @param _quoteAssetAmountLimit 0 = none; min quote received (long) or max quote paid (short), 1e18
    """
    self._require_amm(_amm, True)
    self._require_not_restriction_mode(_amm)

    trader: address = msg.sender
    pos: Pos = self.positionMap[_amm][trader]
    dir: uint8 = REMOVE_FROM_AMM
    side: uint8 = BUY
    if pos.size > 0:
        dir = ADD_TO_AMM
        side = SELL
    resp: PositionResp = empty(PositionResp)
    if (
        staticcall IAmm(_amm).isOverFluctuationLimit(dir, m.Decimal(d=m.sabs(pos.size)))
        and self.partialLiquidationRatio < m.UNIT
    ):
        partial_size: uint256 = m.sabs(m.smul_d(pos.size, m.signed(self.partialLiquidationRatio)))
        notional: uint256 = (staticcall IAmm(_amm).getOutputPrice(dir, m.Decimal(d=partial_size))).d
        resp = self._open_reverse_position(_amm, side, trader, notional, m.UNIT, 0, True)
        self.positionMap[_amm][trader] = resp.position
    else:
        resp = self._close_position_internal(_amm, trader, _quoteAssetAmountLimit.d)
    assert resp.badDebt == 0, "bad debt"

    token: address = staticcall IAmm(_amm).quoteAsset()
    self._withdraw(token, trader, m.sabs(resp.marginToVault))
    fee: uint256 = self._transfer_fee(trader, _amm, resp.exchangedQuoteAssetAmount)
    self._log_position_changed(trader, _amm, resp, fee, 0)


@external
@nonreentrant
def addMargin(_amm: address, _addedMargin: m.Decimal):
    """@param _addedMargin 1e18 quote, pulled from the caller"""
    self._require_amm(_amm, True)
    token: address = staticcall IAmm(_amm).quoteAsset()
    self._require_valid_token_amount(token, _addedMargin.d)
    trader: address = msg.sender
    self.positionMap[_amm][trader].margin += _addedMargin.d
    erc20.transfer_from(token, trader, self, _addedMargin.d)
    log MarginChanged(sender=trader, amm=_amm, amount=m.signed(_addedMargin.d), fundingPayment=0)


@external
@nonreentrant
def removeMargin(_amm: address, _removedMargin: m.Decimal):
    """@param _removedMargin 1e18 quote, sent to the caller; funding is settled first"""
    self._require_amm(_amm, True)
    token: address = staticcall IAmm(_amm).quoteAsset()
    self._require_valid_token_amount(token, _removedMargin.d)
    trader: address = msg.sender
    pos: Pos = self.positionMap[_amm][trader]
    delta: int256 = -m.signed(_removedMargin.d)
    remain: uint256 = 0
    bad_debt: uint256 = 0
    funding: int256 = 0
    cpf: int256 = 0
    remain, bad_debt, funding, cpf = self._calc_remain_margin(_amm, pos, delta)
    assert bad_debt == 0, "margin is not enough"
    pos.margin = remain
    pos.lastCpf = cpf
    assert self._free_collateral(_amm, trader, remain) >= 0, "free collateral is not enough"
    self.positionMap[_amm][trader] = pos
    self._withdraw(token, trader, _removedMargin.d)
    log MarginChanged(sender=trader, amm=_amm, amount=delta, fundingPayment=funding)


@external
@nonreentrant
def settlePosition(_amm: address):
    """@notice after the AMM's shutdown, pay the caller's position out at the settlement price"""
    self._require_amm(_amm, False)
    trader: address = msg.sender
    pos: Pos = self.positionMap[_amm][trader]
    self._require_position_size(pos.size)
    self.positionMap[_amm][trader] = Pos(
        size=0, margin=0, openNotional=0, lastCpf=0, liquidityHistoryIndex=0, blockNumber=block.number
    )
    price: uint256 = (staticcall IAmm(_amm).getSettlementPrice()).d
    settled: uint256 = pos.margin
    if price != 0:
        # size * (settlement price - entry price) + margin, nothing if negative
        entry: uint256 = m.div_d(pos.openNotional, m.sabs(pos.size))
        returned: int256 = m.smul_d(pos.size, m.signed(price) - m.signed(entry)) + m.signed(pos.margin)
        settled = 0
        if returned > 0:
            settled = m.sabs(returned)
    if settled > 0:
        erc20.transfer(staticcall IAmm(_amm).quoteAsset(), trader, settled)
    log PositionSettled(amm=_amm, trader=trader, valueTransferred=settled)


@external
def payFunding(_amm: address):
    """@notice settle the AMM's funding period (anyone may call once it is due)"""
    self._require_amm(_amm, True)
    premium_fraction: int256 = (extcall IAmm(_amm).settleFunding()).d
    count: uint256 = self.cumulativePremiumFractionCount[_amm]
    self.cumulativePremiumFractions[_amm][count] = premium_fraction + self._latest_cpf(_amm)
    self.cumulativePremiumFractionCount[_amm] = count + 1

    # the AMM is the counter party of the traders' net position: it receives the funding they pay
    amm_profit: int256 = m.smul_d(premium_fraction, (staticcall IAmm(_amm).getBaseAssetDelta()).d)
    token: address = staticcall IAmm(_amm).quoteAsset()
    if amm_profit < 0:
        extcall IInsuranceFund(self.insuranceFund).withdraw(token, m.Decimal(d=m.sabs(amm_profit)))
    else:
        self._transfer_to_insurance_fund(token, m.sabs(amm_profit))


# ---------------------------------------------------------------------------------------------
# liquidation engine
# ---------------------------------------------------------------------------------------------

@internal
def _liquidate(amm: address, trader: address, partial_on_spot_ratio: bool, backstop_rule: bool) -> (uint256, bool):
    """
    @notice liquidate `trader` on `amm` if its margin ratio is strictly below maintenance.
    @param partial_on_spot_ratio v2.3: the partial close is gated on the SPOT-only ratio;
           v2.2: on the combined ratio used for the maintenance check
    @param backstop_rule v2.3: only a backstop LP may liquidate when bad debt results
    @return (quote exchanged, 1e18; whether it was a partial close)
    """
    self._require_amm(amm, True)
    self._require_no_lockout(amm)
    margin_ratio: int256 = self._margin_ratio(amm, trader)
    # over the spread limit the oracle-based ratio counts too, whichever is higher
    if staticcall IAmm(amm).isOverSpreadLimit():
        oracle_ratio: int256 = self._margin_ratio_by_option(amm, trader, ORACLE)
        if oracle_ratio - margin_ratio > 0:
            margin_ratio = oracle_ratio
    self._require_more_margin_ratio(margin_ratio, self.maintenanceMarginRatio, False)

    token: address = staticcall IAmm(amm).quoteAsset()
    fee_ratio: uint256 = self.liquidationFeeRatio
    partial_ratio: uint256 = self.partialLiquidationRatio
    gate_ratio: int256 = margin_ratio
    if partial_on_spot_ratio:
        gate_ratio = self._margin_ratio_by_option(amm, trader, SPOT_PRICE)

    resp: PositionResp = empty(PositionResp)
    penalty: uint256 = 0
    fee_to_liquidator: uint256 = 0
    fee_to_insurance_fund: uint256 = 0
    liquidation_bad_debt: uint256 = 0
    is_partial: bool = False
    if gate_ratio > m.signed(fee_ratio) and partial_ratio < m.UNIT and partial_ratio != 0:
        # partial close: reverse-trade the quote worth partialLiquidationRatio of the size
        size: int256 = self.positionMap[amm][trader].size
        dir: uint8 = REMOVE_FROM_AMM
        side: uint8 = BUY
        if size > 0:
            dir = ADD_TO_AMM
            side = SELL
        partial_size: uint256 = m.sabs(m.smul_d(size, m.signed(partial_ratio)))
        notional: uint256 = (staticcall IAmm(amm).getOutputPrice(dir, m.Decimal(d=partial_size))).d
        resp = self._open_reverse_position(amm, side, trader, notional, m.UNIT, 0, True)
        # half of the penalty to the liquidator, the rest to the insurance fund
        penalty = m.mul_d(resp.exchangedQuoteAssetAmount, fee_ratio)
        fee_to_liquidator = penalty // 2
        fee_to_insurance_fund = penalty - fee_to_liquidator
        resp.position.margin -= penalty
        self.positionMap[amm][trader] = resp.position
        is_partial = True
    else:
        penalty = self.positionMap[amm][trader].margin
        resp = self._close_position_internal(amm, trader, 0)
        remain: uint256 = m.sabs(resp.marginToVault)
        fee_to_liquidator = m.mul_d(resp.exchangedQuoteAssetAmount, fee_ratio) // 2
        total_bad_debt: uint256 = resp.badDebt
        # a fee above the remaining margin is bad debt; the remaining margin then still goes to the fund
        if fee_to_liquidator > remain:
            liquidation_bad_debt = fee_to_liquidator - remain
            total_bad_debt += liquidation_bad_debt
        else:
            remain -= fee_to_liquidator
        if total_bad_debt > 0:
            if backstop_rule:
                assert self.backstopLiquidityProviderMap[msg.sender], "not backstop LP"
            self._realize_bad_debt(token, total_bad_debt)
        fee_to_insurance_fund = remain

    if fee_to_insurance_fund > 0:
        self._transfer_to_insurance_fund(token, fee_to_insurance_fund)
    self._withdraw(token, msg.sender, fee_to_liquidator)

    self.lastRestrictionBlock[amm] = block.number
    log RestrictionModeEntered(amm=amm, blockNumber=block.number)
    log PositionLiquidated(
        trader=trader,
        amm=amm,
        positionNotional=resp.exchangedQuoteAssetAmount,
        positionSize=m.sabs(resp.exchangedPositionSize),
        liquidationFee=fee_to_liquidator,
        liquidator=msg.sender,
        badDebt=liquidation_bad_debt,
    )
    self._log_position_changed(trader, amm, resp, 0, penalty)
    return resp.exchangedQuoteAssetAmount, is_partial


# ---------------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------------

@external
@view
def getMarginRatio(_amm: address, _trader: address) -> m.SignedDecimal:
    """@notice (margin + PnL - funding) / notional, SPOT or TWAP whichever PnL is higher, 1e18"""
    return m.SignedDecimal(d=self._margin_ratio(_amm, _trader))


@external
@view
def getPosition(_amm: address, _trader: address) -> Position:
    return self._to_position(self.positionMap[_amm][_trader])


@external
@view
def getUnadjustedPosition(_amm: address, _trader: address) -> Position:
    """@notice same as getPosition (no liquidity migration here)"""
    return self._to_position(self.positionMap[_amm][_trader])


@external
@view
def getPositionNotionalAndUnrealizedPnl(_amm: address, _trader: address, _pnlCalcOption: uint8) -> (m.Decimal, m.SignedDecimal):
    """@notice (notional, unrealized PnL) at SPOT_PRICE (0), TWAP (1) or ORACLE (2), 1e18 quote; funding excluded"""
    assert _pnlCalcOption <= ORACLE
    notional: uint256 = 0
    pnl: int256 = 0
    notional, pnl = self._notional_and_pnl(_amm, _trader, _pnlCalcOption)
    return m.Decimal(d=notional), m.SignedDecimal(d=pnl)


@external
@view
def getLatestCumulativePremiumFraction(_amm: address) -> m.SignedDecimal:
    """@notice sum of the AMM's premium fractions so far, 1e18 quote per base"""
    return m.SignedDecimal(d=self._latest_cpf(_amm))
