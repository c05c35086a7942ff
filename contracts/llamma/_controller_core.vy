# pragma version ~=0.4.3
"""
@title crvUSD / LlamaLend Controller logic (module shared by ControllerM2 and ControllerV3)
@notice Loans, health, scanning views and hard liquidation, with the semantics, events and revert
        strings of curve-stablecoin's Controller.vy. The deployable variants differ only in their
        ABI surface and in two rounding rules, selected by the CEIL_DEBT and CEIL_FRAC immutables:
          * M1/M2 (0.3.7; neither): debt = initial * rate_mul // loan_rate_mul (floor); the debt a
            liquidation repays is d = debt * frac // 1e18 (floor).
          * LlamaLend 0-10 (0.3.10; CEIL_DEBT): debt is rounded up when n_loans > 1; d is floored.
          * V3 (CEIL_DEBT and CEIL_FRAC): debt as LlamaLend; d is rounded up.
        Third-party rights follow `approval[user][caller]`, which only V3 can set (M2 has no
        `approve`), so in M2 "approved" means caller == user.

        Units: collateral and debt amounts are native token units; prices, discounts, health and
        `frac` are 1e18 fixed point. Signed divisions truncate toward zero.

        Simplifications (not visible to a liquidation keeper): the monetary policy is a constant
        rate set by the factory admin (`set_borrow_rate`); no admin/interest fee collection; no
        leverage (`*_extended` borrowing) entry points; no per-user extra_health.
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed
from . import _band_math as bandmath


interface LLAMMA:
    def A() -> uint256: view
    def get_p() -> uint256: view
    def get_base_price() -> uint256: view
    def active_band() -> int256: view
    def active_band_with_skip() -> int256: view
    def p_oracle_up(n: int256) -> uint256: view
    def p_oracle_down(n: int256) -> uint256: view
    def deposit_range(user: address, amount: uint256, n1: int256, n2: int256): nonpayable
    def read_user_tick_numbers(_for: address) -> int256[2]: view
    def get_sum_xy(user: address) -> uint256[2]: view
    def withdraw(user: address, frac: uint256) -> uint256[2]: nonpayable
    def get_x_down(user: address) -> uint256: view
    def get_rate_mul() -> uint256: view
    def set_rate(rate: uint256) -> uint256: nonpayable
    def price_oracle() -> uint256: view
    def can_skip_bands(n_end: int256) -> bool: view
    def has_liquidity(user: address) -> bool: view
    def bands_x(n: int256) -> uint256: view
    def bands_y(n: int256) -> uint256: view

interface Factory:
    def admin() -> address: view

interface WETH:
    def withdraw(_amount: uint256): nonpayable


event UserState:
    user: indexed(address)
    collateral: uint256
    debt: uint256
    n1: int256
    n2: int256
    liquidation_discount: uint256

event Borrow:
    user: indexed(address)
    collateral_increase: uint256
    loan_increase: uint256

event Repay:
    user: indexed(address)
    collateral_decrease: uint256
    loan_decrease: uint256

event RemoveCollateral:
    user: indexed(address)
    collateral_decrease: uint256

event Liquidate:
    liquidator: indexed(address)
    user: indexed(address)
    collateral_received: uint256
    stablecoin_received: uint256
    debt: uint256

event SetBorrowingDiscounts:
    loan_discount: uint256
    liquidation_discount: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    allow: bool


struct Loan:
    initial_debt: uint256
    rate_mul: uint256

struct Position:
    user: address
    x: uint256
    y: uint256
    debt: uint256
    health: int256

struct CallbackData:
    active_band: int256
    stablecoins: uint256
    collateral: uint256


WAD: constant(uint256) = 10**18
MAX_LOAN_DISCOUNT: constant(uint256) = 5 * 10**17
MIN_LIQUIDATION_DISCOUNT: constant(uint256) = 10**16
MIN_TICKS: constant(uint256) = 4
MAX_TICKS: constant(uint256) = 50
MAX_SKIP_TICKS: constant(int256) = 1024
DEAD_SHARES: constant(uint256) = 1000
MAX_RATE: constant(uint256) = 43959106799  # 1e18-based per second, ~300% APY
MAX_ETH_GAS: constant(uint256) = 10000  # gas stipend of the native-ETH payout
MAX_CALLBACK_BYTES: constant(uint256) = 10**4
# selector + 4 head words + 2 offsets + (length + 5 words) of args + bytes length + padded bytes
MAX_CALLBACK_PAYLOAD: constant(uint256) = 4 + 13 * 32 + 10016

CALLBACK_LIQUIDATE: constant(bytes4) = method_id("callback_liquidate(address,uint256,uint256,uint256,uint256[])", output_type=bytes4)
CALLBACK_LIQUIDATE_WITH_BYTES: constant(bytes4) = method_id("callback_liquidate(address,uint256,uint256,uint256,uint256[],bytes)", output_type=bytes4)

FACTORY: immutable(address)
AMM: immutable(LLAMMA)
COLLATERAL_TOKEN: immutable(IERC20)
COLLATERAL_PRECISION: immutable(uint256)
BORROWED_TOKEN: immutable(IERC20)
BORROWED_PRECISION: immutable(uint256)
A: immutable(uint256)
SQRT_BAND_RATIO: immutable(uint256)  # sqrt(A / (A - 1)), 18 decimals
USE_ETH: immutable(bool)  # the collateral is WETH and payouts may be unwrapped to native ETH
CEIL_DEBT: immutable(bool)  # debt rounded up when n_loans > 1 (0.3.10 line)
CEIL_FRAC: immutable(bool)  # d = debt * frac / 1e18 rounded up (V3)

loan: HashMap[address, Loan]
liquidation_discounts: public(HashMap[address, uint256])
_total_debt: Loan
loans: public(address[2**64 - 1])
loan_ix: public(HashMap[address, uint256])
n_loans: public(uint256)
minted: public(uint256)
redeemed: public(uint256)
liquidation_discount: public(uint256)
loan_discount: public(uint256)
approval: public(HashMap[address, HashMap[address, bool]])


@deploy
def __init__(
    collateral_token: address,
    borrowed_token: address,
    amm: address,
    factory: address,
    loan_discount: uint256,
    liquidation_discount: uint256,
    use_eth: bool,
    ceil_debt: bool,
    ceil_frac: bool,
):
    """
    @param collateral_token, borrowed_token Market tokens (decimals <= 18)
    @param amm LLAMMA of the market (its admin must be set to this Controller)
    @param factory Factory whose admin() administers this market
    @param loan_discount, liquidation_discount 1e18 based (e.g. 9e16 and 6e16)
    @param use_eth Collateral is WETH and may be paid out as native ETH (M2 WETH market)
    @param ceil_debt, ceil_frac Rounding rules of the variant (see module notice)
    """
    self._check_discounts(loan_discount, liquidation_discount)
    FACTORY = factory
    AMM = LLAMMA(amm)
    _A: uint256 = staticcall LLAMMA(amm).A()
    A = _A
    SQRT_BAND_RATIO = isqrt(10**36 * _A // (_A - 1))
    COLLATERAL_TOKEN = IERC20(collateral_token)
    BORROWED_TOKEN = IERC20(borrowed_token)
    COLLATERAL_PRECISION = pow_mod256(10, 18 - convert(staticcall IERC20Detailed(collateral_token).decimals(), uint256))
    BORROWED_PRECISION = pow_mod256(10, 18 - convert(staticcall IERC20Detailed(borrowed_token).decimals(), uint256))
    USE_ETH = use_eth
    CEIL_DEBT = ceil_debt
    CEIL_FRAC = ceil_frac
    self.loan_discount = loan_discount
    self.liquidation_discount = liquidation_discount
    self._total_debt.rate_mul = WAD


# ---------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------

@external
@view
def factory() -> address:
    return FACTORY


@external
@view
def amm() -> address:
    return AMM.address


@external
@view
def collateral_token() -> address:
    return COLLATERAL_TOKEN.address


@external
@view
def borrowed_token() -> address:
    return BORROWED_TOKEN.address


@external
@view
def amm_price() -> uint256:
    """
    @return AMM.get_p(): the AMM price in the active band, 18 decimals
    """
    return staticcall AMM.get_p()


# ---------------------------------------------------------------------------------------------
# Debt
# ---------------------------------------------------------------------------------------------

@internal
@view
def _debt(user: address) -> (uint256, uint256):
    """
    @return (debt now in native units, current rate_mul)
    """
    rate_mul: uint256 = staticcall AMM.get_rate_mul()
    loan: Loan = self.loan[user]
    if loan.initial_debt == 0:
        return (0, rate_mul)
    grown: uint256 = loan.initial_debt * rate_mul
    if CEIL_DEBT and self.n_loans > 1:
        return ((grown + loan.rate_mul - 1) // loan.rate_mul, rate_mul)
    return (grown // loan.rate_mul, rate_mul)


@external
@view
@nonreentrant
def debt(user: address) -> uint256:
    """
    @return Current debt of `user` including interest, native units
    """
    return self._debt(user)[0]


@external
@view
@nonreentrant
def loan_exists(user: address) -> bool:
    return self.loan[user].initial_debt > 0


@external
@view
def total_debt() -> uint256:
    """
    @return Sum of all debts including interest, native units (rounded down)
    """
    rate_mul: uint256 = staticcall AMM.get_rate_mul()
    return self._total_debt.initial_debt * rate_mul // max(self._total_debt.rate_mul, 1)


@internal
def _total_debt_add(amount: uint256, rate_mul: uint256):
    # max(.., 1): a delegating shell's storage starts with rate_mul 0 (and initial_debt 0)
    self._total_debt.initial_debt = self._total_debt.initial_debt * rate_mul // max(self._total_debt.rate_mul, 1) + amount
    self._total_debt.rate_mul = rate_mul


@internal
def _total_debt_sub(amount: uint256, rate_mul: uint256):
    total: uint256 = self._total_debt.initial_debt * rate_mul // max(self._total_debt.rate_mul, 1)
    self._total_debt.initial_debt = max(total, amount) - amount
    self._total_debt.rate_mul = rate_mul


# ---------------------------------------------------------------------------------------------
# Band placement
# ---------------------------------------------------------------------------------------------

@internal
@view
def _y_effective(collateral: uint256, n_bands: uint256, discount: uint256) -> uint256:
    """
    @notice Discounted borrowing power of `collateral` (18-decimal units) spread over n_bands
            bands starting at band n, per unit of p_oracle_up(n): band k converts at
            p_oracle_up(n + k) / sqrt(A / (A - 1)). An extra discount of
            DEAD_SHARES / (collateral per band) covers share rounding.
    @return y_effective (18 decimals) with x_effective = y_effective * p_oracle_up(n) / 1e18
    """
    disc: uint256 = min(discount + DEAD_SHARES * WAD // max(collateral // n_bands, DEAD_SHARES), WAD)
    per_band: uint256 = collateral * (WAD - disc) // (SQRT_BAND_RATIO * n_bands)
    total: uint256 = per_band
    for k: uint256 in range(1, MAX_TICKS):
        if k == n_bands:
            break
        per_band = per_band * (A - 1) // A
        total += per_band
    return total


@internal
@view
def _calculate_debt_n1(collateral: uint256, debt: uint256, n_bands: uint256) -> int256:
    """
    @notice Top band n1 such that the loan's discounted collateral covers `debt`: the largest n
            with y_effective * p_oracle_up(n) >= debt, at most 1024 - N bands below the active
            band. Reverts "Debt too high" if n1 is not strictly below the oracle price or would
            cross liquidity.
    @param collateral Native units
    @param debt Native units
    """
    assert debt > 0, "No loan"
    n0: int256 = staticcall AMM.active_band()
    y_eff: uint256 = self._y_effective(collateral * COLLATERAL_PRECISION, n_bands, self.loan_discount)
    ratio: uint256 = y_eff * staticcall AMM.get_base_price() // (debt * BORROWED_PRECISION + 1)
    n1: int256 = min(bandmath.log_floor(A, ratio), n0 + MAX_SKIP_TICKS - convert(n_bands, int256))
    if n1 <= n0:
        assert staticcall AMM.can_skip_bands(n1 - 1), "Debt too high"
    assert staticcall AMM.p_oracle_up(n1) < staticcall AMM.price_oracle(), "Debt too high"
    return n1


@internal
@view
def _max_p_base() -> uint256:
    """
    @return p_oracle_up of the highest band a new loan may start in: the smallest n above
            active_band_with_skip() with p_oracle_up(n) < price_oracle
    """
    p_o: uint256 = staticcall AMM.price_oracle()
    n: int256 = bandmath.log_floor(A, staticcall AMM.get_base_price() * WAD // p_o) + 1
    n = max(n, staticcall AMM.active_band_with_skip() + 1)
    p: uint256 = staticcall AMM.p_oracle_up(n)
    if p >= p_o:
        p = staticcall AMM.p_oracle_up(n + 1)
    return p


@external
@view
@nonreentrant
def max_borrowable(collateral: uint256, N: uint256, current_debt: uint256 = 0) -> uint256:
    """
    @notice Largest debt create_loan(collateral, debt, N) accepts now (0.01% safety margin),
            capped by the Controller's borrowed-token balance plus `current_debt`
    @param collateral Native units
    @return Native units of the borrowed token
    """
    y_eff: uint256 = self._y_effective(collateral * COLLATERAL_PRECISION, N, self.loan_discount)
    x: uint256 = max(y_eff * self._max_p_base() // WAD, 1) - 1
    x = x * (WAD - 10**14) // (WAD * BORROWED_PRECISION)
    return min(x, staticcall BORROWED_TOKEN.balanceOf(self) + current_debt)


@external
@view
@nonreentrant
def calculate_debt_n1(collateral: uint256, debt: uint256, N: uint256) -> int256:
    """
    @return The top band a loan of (collateral, debt, N) would be deposited at
    """
    return self._calculate_debt_n1(collateral, debt, N)


# ---------------------------------------------------------------------------------------------
# Token movements
# ---------------------------------------------------------------------------------------------

@internal
def _transfer_from(token: IERC20, _from: address, _to: address, amount: uint256):
    if amount > 0:
        assert extcall token.transferFrom(_from, _to, amount, default_return_value=True)


@internal
def _transfer(token: IERC20, _to: address, amount: uint256):
    if amount > 0:
        assert extcall token.transfer(_to, amount, default_return_value=True)


@internal
def _withdraw_collateral(_to: address, amount: uint256, use_eth: bool):
    """
    @notice Pay collateral held by the AMM to `_to`; unwrapped to native ETH (10 000 gas stipend,
            reverting if refused) when this is the WETH market and use_eth is set
    """
    if use_eth and USE_ETH:
        self._transfer_from(COLLATERAL_TOKEN, AMM.address, self, amount)
        extcall WETH(COLLATERAL_TOKEN.address).withdraw(amount)
        raw_call(_to, b"", value=amount, gas=MAX_ETH_GAS)
    else:
        self._transfer_from(COLLATERAL_TOKEN, AMM.address, _to, amount)


# ---------------------------------------------------------------------------------------------
# Loan list
# ---------------------------------------------------------------------------------------------

@internal
def _add_to_list(_for: address):
    n: uint256 = self.n_loans
    self.loans[n] = _for
    self.loan_ix[_for] = n
    self.n_loans = n + 1


@internal
def _remove_from_list(_for: address):
    """
    @notice Swap-and-pop: the last loan takes the removed loan's index
    """
    last: uint256 = self.n_loans - 1
    ix: uint256 = self.loan_ix[_for]
    assert self.loans[ix] == _for  # dev: list corrupted
    self.loan_ix[_for] = 0
    if ix < last:
        moved: address = self.loans[last]
        self.loans[ix] = moved
        self.loan_ix[moved] = ix
    self.n_loans = last


@internal
@view
def _check_approval(_for: address) -> bool:
    return msg.sender == _for or self.approval[_for][msg.sender]


@external
def approve(_spender: address, _allow: bool):
    """
    @notice Let `_spender` act for msg.sender (repay, remove collateral, and liquidate as if it
            were the user: no health check and no liquidation discount)
    """
    self.approval[msg.sender][_spender] = _allow
    log Approval(owner=msg.sender, spender=_spender, allow=_allow)


# ---------------------------------------------------------------------------------------------
# Borrowing
# ---------------------------------------------------------------------------------------------

@external
@nonreentrant
def create_loan(collateral: uint256, debt: uint256, N: uint256):
    """
    @notice Deposit `collateral` into N bands and borrow `debt` (native units)
    """
    assert self.loan[msg.sender].initial_debt == 0, "Loan already created"
    assert N >= MIN_TICKS, "Need more ticks"
    assert N <= MAX_TICKS, "Need less ticks"
    n1: int256 = self._calculate_debt_n1(collateral, debt, N)
    n2: int256 = n1 + convert(N - 1, int256)

    rate_mul: uint256 = staticcall AMM.get_rate_mul()
    self.loan[msg.sender] = Loan(initial_debt=debt, rate_mul=rate_mul)
    discount: uint256 = self.liquidation_discount
    self.liquidation_discounts[msg.sender] = discount
    self._add_to_list(msg.sender)
    self._total_debt_add(debt, rate_mul)

    extcall AMM.deposit_range(msg.sender, collateral, n1, n2)
    self.minted += debt
    self._transfer_from(COLLATERAL_TOKEN, msg.sender, AMM.address, collateral)
    self._transfer(BORROWED_TOKEN, msg.sender, debt)

    log UserState(user=msg.sender, collateral=collateral, debt=debt, n1=n1, n2=n2, liquidation_discount=discount)
    log Borrow(user=msg.sender, collateral_increase=collateral, loan_increase=debt)


@internal
def _rebalance_loan(d_collateral: uint256, d_debt: uint256, _for: address, remove: bool):
    """
    @notice Withdraw the whole position, change collateral/debt, and redeposit it at a new n1
            (only possible when no band has been converted yet)
    """
    debt: uint256 = 0
    rate_mul: uint256 = 0
    debt, rate_mul = self._debt(_for)
    assert debt > 0, "Loan doesn't exist"
    debt += d_debt
    ns: int256[2] = staticcall AMM.read_user_tick_numbers(_for)
    size: uint256 = convert(ns[1] - ns[0], uint256) + 1

    xy: uint256[2] = extcall AMM.withdraw(_for, WAD)
    assert xy[0] == 0, "Already in underwater mode"
    collateral: uint256 = xy[1] + d_collateral
    if remove:
        collateral = xy[1] - d_collateral
    n1: int256 = self._calculate_debt_n1(collateral, debt, size)
    n2: int256 = n1 + ns[1] - ns[0]
    extcall AMM.deposit_range(_for, collateral, n1, n2)
    self.loan[_for] = Loan(initial_debt=debt, rate_mul=rate_mul)

    discount: uint256 = self.liquidation_discounts[_for]
    if _for == msg.sender:
        discount = self.liquidation_discount
        self.liquidation_discounts[_for] = discount
    if d_debt != 0:
        self._total_debt_add(d_debt, rate_mul)

    if remove:
        log RemoveCollateral(user=_for, collateral_decrease=d_collateral)
    else:
        log Borrow(user=_for, collateral_increase=d_collateral, loan_increase=d_debt)
    log UserState(user=_for, collateral=collateral, debt=debt, n1=n1, n2=n2, liquidation_discount=discount)


@external
@nonreentrant
def borrow_more(collateral: uint256, debt: uint256):
    """
    @notice Add `collateral` (may be 0) and borrow `debt` more (native units)
    """
    if debt == 0:
        return
    self._rebalance_loan(collateral, debt, msg.sender, False)
    self.minted += debt
    self._transfer_from(COLLATERAL_TOKEN, msg.sender, AMM.address, collateral)
    self._transfer(BORROWED_TOKEN, msg.sender, debt)


@external
@nonreentrant
def add_collateral(collateral: uint256, _for: address = msg.sender):
    """
    @notice Add collateral (native units) to the loan of `_for`, paid by msg.sender
    """
    if collateral == 0:
        return
    self._rebalance_loan(collateral, 0, _for, False)
    self._transfer_from(COLLATERAL_TOKEN, msg.sender, AMM.address, collateral)


@internal
def _remove_collateral(collateral: uint256, _for: address, use_eth: bool):
    if collateral == 0:
        return
    assert self._check_approval(_for)
    self._rebalance_loan(collateral, 0, _for, True)
    self._withdraw_collateral(_for, collateral, use_eth)


@internal
def _repay(_d_debt: uint256, _for: address, max_active_band: int256, use_eth: bool):
    """
    @notice Repay min(_d_debt, debt), pulled from msg.sender. A full repayment returns all of the
            user's coins to `_for`; a partial one re-deposits the collateral at a new n1 unless the
            user is already in soft liquidation (then UserState logs collateral = 2**256 - 1).
    """
    if _d_debt == 0:
        return
    debt: uint256 = 0
    rate_mul: uint256 = 0
    debt, rate_mul = self._debt(_for)
    assert debt > 0, "Loan doesn't exist"
    d_debt: uint256 = min(debt, _d_debt)
    debt -= d_debt
    approved: bool = self._check_approval(_for)

    if debt == 0:
        xy: uint256[2] = extcall AMM.withdraw(_for, WAD)
        if xy[0] > 0:
            assert approved
            self._transfer_from(BORROWED_TOKEN, AMM.address, _for, xy[0])
        self._withdraw_collateral(_for, xy[1], use_eth)
        log UserState(user=_for, collateral=0, debt=0, n1=0, n2=0, liquidation_discount=0)
        log Repay(user=_for, collateral_decrease=xy[1], loan_decrease=d_debt)
        self._remove_from_list(_for)
    else:
        active: int256 = staticcall AMM.active_band_with_skip()
        assert active <= max_active_band
        ns: int256[2] = staticcall AMM.read_user_tick_numbers(_for)
        discount: uint256 = self.liquidation_discounts[_for]
        if ns[0] > active:
            xy: uint256[2] = extcall AMM.withdraw(_for, WAD)
            n1: int256 = self._calculate_debt_n1(xy[1], debt, convert(ns[1] - ns[0], uint256) + 1)
            n2: int256 = n1 + ns[1] - ns[0]
            extcall AMM.deposit_range(_for, xy[1], n1, n2)
            if approved:
                discount = self.liquidation_discount
                self.liquidation_discounts[_for] = discount
            log UserState(user=_for, collateral=xy[1], debt=debt, n1=n1, n2=n2, liquidation_discount=discount)
        else:
            log UserState(user=_for, collateral=max_value(uint256), debt=debt, n1=ns[0], n2=ns[1], liquidation_discount=discount)
        log Repay(user=_for, collateral_decrease=0, loan_decrease=d_debt)
        if not approved:
            # a third party may not leave the loan unhealthy
            assert self._health(_for, debt, False, discount) > 0

    self._transfer_from(BORROWED_TOKEN, msg.sender, self, d_debt)
    self.redeemed += d_debt
    self.loan[_for] = Loan(initial_debt=debt, rate_mul=rate_mul)
    self._total_debt_sub(d_debt, rate_mul)


# ---------------------------------------------------------------------------------------------
# Health and scanning
# ---------------------------------------------------------------------------------------------

@internal
@view
def _health(user: address, debt: uint256, full: bool, discount: uint256) -> int256:
    """
    @notice health = x_down * (1 - discount) / debt - 1 (1e18 based, truncated), where x_down =
            AMM.get_x_down(user). With full = True and the user not in soft liquidation
            (n1 > active_band) and price_oracle > p_up = p_oracle_up(n1), adds
            (price_oracle - p_up) * collateral / debt: the value of the collateral above the top band.
    """
    assert debt > 0, "Loan doesn't exist"
    health: int256 = convert(staticcall AMM.get_x_down(user), int256) * convert(WAD - discount, int256) // convert(debt, int256) - convert(WAD, int256)
    if full:
        n1: int256 = (staticcall AMM.read_user_tick_numbers(user))[0]
        if n1 > staticcall AMM.active_band():
            p_o: uint256 = staticcall AMM.price_oracle()
            p_up: uint256 = staticcall AMM.p_oracle_up(n1)
            if p_o > p_up:
                y: uint256 = (staticcall AMM.get_sum_xy(user))[1]
                health += convert((p_o - p_up) * y * COLLATERAL_PRECISION // (debt * BORROWED_PRECISION), int256)
    return health


@external
@view
@nonreentrant
def health(user: address, full: bool = False) -> int256:
    """
    @return Health of `user`, 1e18 based; hard liquidation is allowed when health(user, True) < 0
    """
    return self._health(user, self._debt(user)[0], full, self.liquidation_discounts[user])


@external
@view
@nonreentrant
def users_to_liquidate(_from: uint256 = 0, _limit: uint256 = 0) -> DynArray[Position, 1000]:
    """
    @notice Loans with full health < 0 among loans[_from : _from + _limit] (_limit = 0: all)
    @return (user, x, y, debt, health) with x, y = AMM.get_sum_xy(user), native units
    """
    n_loans: uint256 = self.n_loans
    limit: uint256 = _limit
    if _limit == 0:
        limit = n_loans
    ix: uint256 = _from
    out: DynArray[Position, 1000] = []
    for i: uint256 in range(10**6):
        if ix >= n_loans or i == limit:
            break
        user: address = self.loans[ix]
        debt: uint256 = self._debt(user)[0]
        health: int256 = self._health(user, debt, True, self.liquidation_discounts[user])
        if health < 0:
            xy: uint256[2] = staticcall AMM.get_sum_xy(user)
            out.append(Position(user=user, x=xy[0], y=xy[1], debt=debt, health=health))
        ix += 1
    return out


@external
@view
@nonreentrant
def user_state(user: address) -> uint256[4]:
    """
    @return [collateral, borrowed, debt, N], native units
    """
    xy: uint256[2] = staticcall AMM.get_sum_xy(user)
    ns: int256[2] = staticcall AMM.read_user_tick_numbers(user)
    return [xy[1], xy[0], self._debt(user)[0], convert(ns[1] - ns[0] + 1, uint256)]


@external
@view
@nonreentrant
def user_prices(user: address) -> uint256[2]:
    """
    @return [p_oracle_up(n1), p_oracle_down(n2)], 18 decimals
    """
    assert staticcall AMM.has_liquidity(user)
    ns: int256[2] = staticcall AMM.read_user_tick_numbers(user)
    return [staticcall AMM.p_oracle_up(ns[0]), staticcall AMM.p_oracle_down(ns[1])]


# ---------------------------------------------------------------------------------------------
# Liquidation
# ---------------------------------------------------------------------------------------------

@internal
@pure
def _get_f_remove(frac: uint256, health_limit: uint256) -> uint256:
    """
    @notice Share of the user's bands withdrawn when repaying `frac` of the debt:
            f = ((1 + h/2) / (1 + h) * (1 - frac) + frac) * frac, and exactly 1e18 for frac = 1e18
    """
    if frac >= WAD:
        return WAD
    f: uint256 = (WAD + health_limit // 2) * (WAD - frac) // (WAD + health_limit)
    return (f + frac) * frac // WAD


@external
@view
@nonreentrant
def tokens_to_liquidate(user: address, frac: uint256 = 10**18) -> uint256:
    """
    @notice Borrowed tokens msg.sender must hold to liquidate `frac` of the loan of `user`:
            max(debt * frac // 1e18 - x * f_remove // 1e18, 0) with x = get_sum_xy(user)[0];
            f_remove uses h = 0 if msg.sender is the user (or, V3, approved by it). Native units.
    """
    health_limit: uint256 = 0
    if not self._check_approval(user):
        health_limit = self.liquidation_discounts[user]
    stablecoins: uint256 = (staticcall AMM.get_sum_xy(user))[0] * self._get_f_remove(frac, health_limit) // WAD
    debt: uint256 = self._debt(user)[0] * frac // WAD
    return max(debt, stablecoins) - stablecoins


@internal
def _execute_callback(
    callbacker: address,
    user: address,
    stablecoins: uint256,
    collateral: uint256,
    debt: uint256,
    callback_args: DynArray[uint256, 5],
    callback_bytes: Bytes[MAX_CALLBACK_BYTES],
) -> CallbackData:
    """
    @notice Call callback_liquidate on `callbacker` (the with-bytes overload when bytes are given);
            it must return 64 bytes (stablecoins, collateral) and must not change the AMM's active
            band or that band's balances.
    """
    assert callbacker != COLLATERAL_TOKEN.address
    assert callbacker != BORROWED_TOKEN.address
    data: CallbackData = empty(CallbackData)
    data.active_band = staticcall AMM.active_band()
    band_x: uint256 = staticcall AMM.bands_x(data.active_band)
    band_y: uint256 = staticcall AMM.bands_y(data.active_band)

    payload: Bytes[MAX_CALLBACK_PAYLOAD] = b""
    if len(callback_bytes) == 0:
        payload = abi_encode(user, stablecoins, collateral, debt, callback_args, method_id=CALLBACK_LIQUIDATE)
    else:
        payload = abi_encode(user, stablecoins, collateral, debt, callback_args, callback_bytes, method_id=CALLBACK_LIQUIDATE_WITH_BYTES)
    response: Bytes[64] = raw_call(callbacker, payload, max_outsize=64)
    data.stablecoins = convert(slice(response, 0, 32), uint256)
    data.collateral = convert(slice(response, 32, 32), uint256)

    assert data.active_band == staticcall AMM.active_band()
    assert band_x == staticcall AMM.bands_x(data.active_band)
    assert band_y == staticcall AMM.bands_y(data.active_band)
    return data


@internal
def _liquidate(
    user: address,
    min_x: uint256,
    frac: uint256,
    use_eth: bool,
    callbacker: address,
    callback_args: DynArray[uint256, 5],
    callback_bytes: Bytes[MAX_CALLBACK_BYTES],
):
    """
    @notice Hard liquidation of `frac` (<= 1e18) of the loan of `user` by msg.sender.
            A third party (not approved by the user) needs health(user, True) < 0 and withdraws
            with h = liquidation_discounts[user]; the user itself (or an approved caller) has no
            check and h = 0. Repays d = debt * frac / 1e18, withdraws the share f_remove of the
            bands as [x, y], requires x >= min_x. If d > x the caller (or the callbacker's
            proceeds) covers d - x; collateral and any surplus go to msg.sender.
    """
    health_limit: uint256 = 0
    if not self._check_approval(user):
        health_limit = self.liquidation_discounts[user]
    debt: uint256 = 0
    rate_mul: uint256 = 0
    debt, rate_mul = self._debt(user)
    if health_limit != 0:
        assert self._health(user, debt, True, health_limit) < 0, "Not enough rekt"

    d: uint256 = debt * frac // WAD
    if CEIL_FRAC:
        d = (debt * frac + WAD - 1) // WAD
    assert d > 0
    final_debt: uint256 = debt - d

    xy: uint256[2] = extcall AMM.withdraw(user, self._get_f_remove(frac, health_limit))
    assert xy[0] >= min_x, "Slippage"
    self._transfer_from(BORROWED_TOKEN, AMM.address, self, min(xy[0], d))

    if d > xy[0]:
        shortfall: uint256 = d - xy[0]
        if callbacker == empty(address):
            self._withdraw_collateral(msg.sender, xy[1], use_eth)
            self._transfer_from(BORROWED_TOKEN, msg.sender, self, shortfall)
        else:
            self._transfer_from(COLLATERAL_TOKEN, AMM.address, callbacker, xy[1])
            cb: CallbackData = self._execute_callback(callbacker, user, xy[0], xy[1], d, callback_args, callback_bytes)
            assert cb.stablecoins >= shortfall, "not enough proceeds"
            self._transfer_from(BORROWED_TOKEN, callbacker, msg.sender, cb.stablecoins - shortfall)
            self._transfer_from(BORROWED_TOKEN, callbacker, self, shortfall)
            self._transfer_from(COLLATERAL_TOKEN, callbacker, msg.sender, cb.collateral)
    else:
        self._withdraw_collateral(msg.sender, xy[1], use_eth)
        self._transfer_from(BORROWED_TOKEN, AMM.address, msg.sender, xy[0] - d)

    self.redeemed += d
    self.loan[user] = Loan(initial_debt=final_debt, rate_mul=rate_mul)
    log Repay(user=user, collateral_decrease=xy[1], loan_decrease=d)
    log Liquidate(liquidator=msg.sender, user=user, collateral_received=xy[1], stablecoin_received=xy[0], debt=d)
    if final_debt == 0:
        log UserState(user=user, collateral=0, debt=0, n1=0, n2=0, liquidation_discount=0)
        self._remove_from_list(user)
    self._total_debt_sub(d, rate_mul)


# ---------------------------------------------------------------------------------------------
# Admin (factory admin)
# ---------------------------------------------------------------------------------------------

@internal
@pure
def _check_discounts(loan_discount: uint256, liquidation_discount: uint256):
    assert loan_discount > liquidation_discount
    assert liquidation_discount >= MIN_LIQUIDATION_DISCOUNT
    assert loan_discount <= MAX_LOAN_DISCOUNT


@external
@nonreentrant
def set_borrowing_discounts(loan_discount: uint256, liquidation_discount: uint256):
    """
    @notice New discounts for new loans (existing loans keep their liquidation_discounts[user]
            until their owner touches them)
    """
    assert msg.sender == staticcall Factory(FACTORY).admin()
    self._check_discounts(loan_discount, liquidation_discount)
    self.loan_discount = loan_discount
    self.liquidation_discount = liquidation_discount
    log SetBorrowingDiscounts(loan_discount=loan_discount, liquidation_discount=liquidation_discount)


@external
@nonreentrant
def set_borrow_rate(rate: uint256) -> uint256:
    """
    @notice Stand-in for the monetary policy: set the AMM's interest rate (1e18 = 100% per second,
            at most ~300% APY). Debts and the band grid grow with rate_mul from now on.
    @return rate_mul at the time of the change
    """
    assert msg.sender == staticcall Factory(FACTORY).admin()
    assert rate <= MAX_RATE, "Rate too high"
    return extcall AMM.set_rate(rate)
