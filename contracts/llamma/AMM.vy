# pragma version ~=0.4.3
"""
@title LLAMMA — lending-liquidating AMM (reference implementation)
@notice Same external ABI, events and revert strings as curve-stablecoin's AMM.vy (M2/V3).
        coins(0) = x = borrowed token, coins(1) = y = collateral.

        Units: prices are 18-decimal "borrowed per collateral"; band balances `bands_x`/`bands_y`
        are stored normalised to 18 decimals (native amount * PRECISION); every amount that goes
        in or out of an external function is in the token's native units.

        Band grid: p_oracle_up(n) = P_base * ((A - 1) / A) ** n, P_base = BASE_PRICE * rate_mul,
        p_oracle_down(n) = p_oracle_up(n + 1). A larger n is a lower price. Bands below
        active_band (n < active) hold only x, bands above it only y.

        Per-band invariant (whitepaper): (f + x) * (g + y) = I = p_o * A**2 * y0**2 with
            f = p_o**2 / p_up * A * y0,   g = p_up / p_o * (A - 1) * y0,
        y0 solving p_o*A*y0**2 - (A*p_o**2/p_up*y + (A-1)*p_up/p_o*x)*y0 - x*y = 0.
        The AMM price in band n at oracle price p_o runs from p_o**3/p_up**2 (only y) to
        p_o**3/p_down**2 (only x).

        Rounding: trade inputs are rounded up, outputs down (to the native unit); a partly
        consumed band keeps its output side rounded up by 1 (normalised) unit.

        Simplifications (not visible to a liquidation keeper): price_oracle() is the oracle
        contract's price() without the 120 s x/÷1.25 speed limit and there is no dynamic fee;
        all of the swap fee stays in the band (no admin fee); no liquidity-mining callback.
"""

from ethereum.ercs import IERC20
from . import _band_math as bandmath


interface PriceOracle:
    def price() -> uint256: view
    def price_w() -> uint256: nonpayable


event TokenExchange:
    buyer: indexed(address)
    sold_id: uint256
    tokens_sold: uint256
    bought_id: uint256
    tokens_bought: uint256

event Deposit:
    provider: indexed(address)
    amount: uint256
    n1: int256
    n2: int256

event Withdraw:
    provider: indexed(address)
    amount_borrowed: uint256
    amount_collateral: uint256

event SetRate:
    rate: uint256
    rate_mul: uint256
    time: uint256

event SetFee:
    fee: uint256


struct Trade:
    amount_in: uint256  # normalised input taken (fees included)
    amount_out: uint256  # normalised output given
    n_first: int256  # first band with liquidity the trade touched
    n_last: int256  # band where the trade stopped: the new active band
    band_in: DynArray[uint256, MAX_TICKS]  # new input-side balance of bands n_first .. n_last
    last_out: uint256  # output-side balance left in n_last


WAD: constant(uint256) = 10**18
MAX_TICKS: constant(uint256) = 50
MAX_SKIP_TICKS: constant(uint256) = 1024
DEAD_SHARES: constant(uint256) = 1000
MAX_FEE: constant(uint256) = 10**17  # 10%

BORROWED_TOKEN: immutable(IERC20)
BORROWED_PRECISION: immutable(uint256)
COLLATERAL_TOKEN: immutable(IERC20)
COLLATERAL_PRECISION: immutable(uint256)
BASE_PRICE: immutable(uint256)
A: public(immutable(uint256))
SQRT_BAND_RATIO: immutable(uint256)  # sqrt(A / (A - 1)), 18 decimals
MAX_ORACLE_DN_POW: immutable(uint256)  # (A / (A - 1)) ** 50, 18 decimals: trades stop ~50 bands away from p_o

admin: public(address)
fee: public(uint256)
rate: public(uint256)
rate_time: uint256
rate_mul: uint256
active_band: public(int256)
min_band: public(int256)
max_band: public(int256)
price_oracle_contract: public(PriceOracle)

bands_x: public(HashMap[int256, uint256])
bands_y: public(HashMap[int256, uint256])
total_shares: HashMap[int256, uint256]
user_bands: HashMap[address, int256[2]]  # [n1, n2], n1 <= n2
user_shares: HashMap[address, uint256[MAX_TICKS]]  # share of band n1 + i at index i


@deploy
def __init__(
    _borrowed_token: address,
    _borrowed_precision: uint256,
    _collateral_token: address,
    _collateral_precision: uint256,
    _A: uint256,
    _base_price: uint256,
    _fee: uint256,
    _price_oracle_contract: address,
):
    """
    @param _borrowed_precision 10 ** (18 - borrowed decimals)
    @param _collateral_precision 10 ** (18 - collateral decimals)
    @param _A Band density: each band is 1/A wide (A >= 2)
    @param _base_price p_oracle_up(0) at rate_mul = 1, 18 decimals (typically the price at deployment)
    @param _fee Swap fee, 1e18 = 100%
    @param _price_oracle_contract Contract with price() / price_w()
    """
    assert _A >= 2, "A too low"
    assert _fee < MAX_FEE, "Fee"
    BORROWED_TOKEN = IERC20(_borrowed_token)
    BORROWED_PRECISION = _borrowed_precision
    COLLATERAL_TOKEN = IERC20(_collateral_token)
    COLLATERAL_PRECISION = _collateral_precision
    A = _A
    BASE_PRICE = _base_price
    SQRT_BAND_RATIO = isqrt(10**36 * _A // (_A - 1))
    MAX_ORACLE_DN_POW = bandmath.ratio_pow(_A, -50) // WAD
    self.fee = _fee
    self.price_oracle_contract = PriceOracle(_price_oracle_contract)
    self.rate_mul = WAD
    self.rate_time = block.timestamp


@external
def set_admin(_admin: address):
    """
    @notice One-time: make `_admin` (the Controller) the admin and let it pull both tokens
    """
    assert self.admin == empty(address)
    self.admin = _admin
    assert extcall BORROWED_TOKEN.approve(_admin, max_value(uint256), default_return_value=True)
    assert extcall COLLATERAL_TOKEN.approve(_admin, max_value(uint256), default_return_value=True)


@external
@view
def coins(i: uint256) -> address:
    """
    @return coins(0) = borrowed token, coins(1) = collateral token
    """
    return [BORROWED_TOKEN.address, COLLATERAL_TOKEN.address][i]


# ---------------------------------------------------------------------------------------------
# Prices and the band grid
# ---------------------------------------------------------------------------------------------

@internal
@view
def _oracle() -> uint256:
    return staticcall self.price_oracle_contract.price()


@external
@view
def price_oracle() -> uint256:
    """
    @return Oracle price of the collateral, 18 decimals
    """
    return self._oracle()


@internal
@view
def _rate_mul() -> uint256:
    # rate_mul(t) = rate_mul_saved * (1 + rate * (t - rate_time)), 1e18 based, rounded down
    return self.rate_mul * (WAD + self.rate * (block.timestamp - self.rate_time)) // WAD


@internal
def _fold_rate():
    self.rate_mul = self._rate_mul()
    self.rate_time = block.timestamp


@external
@view
def get_rate_mul() -> uint256:
    """
    @return Interest multiplier 1 + integral(rate dt), 1e18 based
    """
    return self._rate_mul()


@internal
@view
def _base_price() -> uint256:
    return BASE_PRICE * self._rate_mul() // WAD


@external
@view
def get_base_price() -> uint256:
    """
    @return p_oracle_up(0) including accrued interest, 18 decimals
    """
    return self._base_price()


@internal
@view
def _p_oracle_up(n: int256) -> uint256:
    return self._base_price() * bandmath.ratio_pow(A, n) // 10**36


@external
@view
def p_oracle_up(n: int256) -> uint256:
    """
    @return Upper oracle price of band n: P_base * ((A - 1) / A) ** n, 18 decimals
    """
    return self._p_oracle_up(n)


@external
@view
def p_oracle_down(n: int256) -> uint256:
    """
    @return Lower oracle price of band n, equal to p_oracle_up(n + 1)
    """
    return self._p_oracle_up(n + 1)


@internal
@pure
def _cube_over(p_o: uint256, p_edge: uint256) -> uint256:
    # p_o**3 / p_edge**2: the AMM price of a band edge at oracle price p_o
    return p_o * p_o // p_edge * p_o // p_edge


@external
@view
def p_current_up(n: int256) -> uint256:
    """
    @return Highest AMM price of band n at the current oracle price (band holds only x)
    """
    return self._cube_over(self._oracle(), self._p_oracle_up(n + 1))


@external
@view
def p_current_down(n: int256) -> uint256:
    """
    @return Lowest AMM price of band n at the current oracle price (band holds only y)
    """
    return self._cube_over(self._oracle(), self._p_oracle_up(n))


@internal
@view
def _get_y0(x: uint256, y: uint256, p_o: uint256, p_up: uint256) -> uint256:
    """
    @notice y0 of a band: its collateral when x = 0 and p = p_o = p_up (normalised units)
    """
    assert p_o != 0
    b: uint256 = 0
    if x != 0:
        b = p_up * (A - 1) * x // p_o
    if y != 0:
        b += A * p_o * p_o // p_up * y // WAD
    if x != 0 and y != 0:
        d: uint256 = b * b + 4 * A * p_o * y // WAD * x
        return (b + isqrt(d)) * WAD // (2 * A * p_o)
    return b * WAD // (A * p_o)


@internal
@view
def _band_fg(y0: uint256, p_o: uint256, p_up: uint256) -> uint256[2]:
    """
    @return [f, g] offsets of the band invariant, normalised x and y units
    """
    return [A * y0 * p_o // p_up * p_o // WAD, (A - 1) * y0 * p_up // p_o]


@internal
@view
def _get_p(n: int256, x: uint256, y: uint256) -> uint256:
    p_up: uint256 = self._p_oracle_up(n)
    p_o: uint256 = self._oracle()
    if x == 0:
        p_cd: uint256 = self._cube_over(p_o, p_up)
        if y == 0:
            return p_cd * A // (A - 1)  # empty band: geometric middle of its AMM price range
        return p_cd
    if y == 0:
        return self._cube_over(p_o, p_up * (A - 1) // A)
    fg: uint256[2] = self._band_fg(self._get_y0(x, y, p_o, p_up), p_o, p_up)
    return (fg[0] + x) * WAD // (fg[1] + y)


@external
@view
@nonreentrant
def get_p() -> uint256:
    """
    @return AMM price (f + x) / (g + y) in the active band, 18 decimals
    """
    n: int256 = self.active_band
    return self._get_p(n, self.bands_x[n], self.bands_y[n])


# ---------------------------------------------------------------------------------------------
# Bands and users
# ---------------------------------------------------------------------------------------------

@external
@view
@nonreentrant
def read_user_tick_numbers(user: address) -> int256[2]:
    """
    @return [n1, n2], the user's highest-price and lowest-price band (n1 <= n2)
    """
    return self.user_bands[user]


@external
@view
@nonreentrant
def has_liquidity(user: address) -> bool:
    return self.user_shares[user][0] != 0


@external
@view
@nonreentrant
def can_skip_bands(n_end: int256) -> bool:
    """
    @notice True if no band between active_band and n_end (exclusive) holds liquidity that the
            move would cross (collateral when moving up in n, borrowed token when moving down)
    """
    n: int256 = self.active_band
    for _i: uint256 in range(MAX_SKIP_TICKS):
        if n_end > n:
            if self.bands_y[n] != 0:
                return False
            n += 1
        else:
            if self.bands_x[n] != 0:
                return False
            n -= 1
        if n == n_end:
            break
    return True


@external
@view
@nonreentrant
def active_band_with_skip() -> int256:
    """
    @return The highest band n <= active_band that holds borrowed tokens; active_band - 1024 if
            none does above min_band
    """
    n0: int256 = self.active_band
    n: int256 = n0
    lowest: int256 = self.min_band
    for _i: uint256 in range(MAX_SKIP_TICKS):
        if n < lowest:
            return n0 - convert(MAX_SKIP_TICKS, int256)
        if self.bands_x[n] != 0:
            break
        n -= 1
    return n


@external
@nonreentrant
def deposit_range(user: address, amount: uint256, n1: int256, n2: int256):
    """
    @notice Spread `amount` collateral (native units, already transferred by the caller) evenly
            over bands n1..n2; band n1 also takes the rounding remainder. Admin (Controller) only.
            Empty bands between the active band and n1 are skipped first; n1 must end up above it.
    """
    assert msg.sender == self.admin
    assert n2 < 2**127
    assert n1 > -2**127

    n0: int256 = self.active_band
    for i: uint256 in range(MAX_SKIP_TICKS + 1):
        if n1 > n0:
            if i != 0:
                self.active_band = n0
            break
        assert self.bands_x[n0] == 0 and i < MAX_SKIP_TICKS, "Deposit below current band"
        n0 -= 1

    n_bands: uint256 = convert(n2 - n1, uint256) + 1
    assert n_bands <= MAX_TICKS
    total_amount: uint256 = amount * COLLATERAL_PRECISION
    per_band: uint256 = total_amount // n_bands
    assert per_band > 100, "Amount too low"
    assert self.user_shares[user][0] == 0  # dev: user must have no liquidity
    self.user_bands[user] = [n1, n2]

    for i: uint256 in range(MAX_TICKS):
        if i == n_bands:
            break
        band: int256 = n1 + convert(i, int256)
        assert self.bands_x[band] == 0, "Band not empty"
        y: uint256 = per_band
        if i == 0:
            y = total_amount - per_band * (n_bands - 1)
        band_y: uint256 = self.bands_y[band]
        s: uint256 = self.total_shares[band]
        ds: uint256 = (s + DEAD_SHARES) * y // (band_y + 1)
        assert ds > 0, "Amount too low"
        s += ds
        assert s < 2**128
        self.total_shares[band] = s
        self.user_shares[user][i] = ds
        self.bands_y[band] = band_y + y

    self.min_band = min(self.min_band, n1)
    self.max_band = max(self.max_band, n2)
    self._fold_rate()
    log Deposit(provider=user, amount=amount, n1=n1, n2=n2)


@external
@nonreentrant
def withdraw(user: address, frac: uint256) -> uint256[2]:
    """
    @notice Remove the fraction `frac` (1e18 = all) of the user's shares in every band.
            Coins stay in the AMM for the admin to pull. Admin (Controller) only.
    @return [borrowed, collateral] withdrawn, native units (rounded down)
    """
    assert msg.sender == self.admin
    assert frac <= WAD
    ns: int256[2] = self.user_bands[user]
    assert self.user_shares[user][0] > 0, "No deposits"

    lowest: int256 = self.min_band
    highest: int256 = self.max_band
    new_lowest: int256 = lowest
    new_highest: int256 = highest
    total_x: uint256 = 0
    total_y: uint256 = 0
    for i: uint256 in range(MAX_TICKS):
        n: int256 = ns[0] + convert(i, int256)
        if n > ns[1]:
            break
        share: uint256 = self.user_shares[user][i]
        ds: uint256 = frac * share // WAD
        self.user_shares[user][i] = share - ds
        s: uint256 = self.total_shares[n]
        self.total_shares[n] = s - ds
        x: uint256 = self.bands_x[n]
        y: uint256 = self.bands_y[n]
        dx: uint256 = (x + 1) * ds // (s + DEAD_SHARES)
        dy: uint256 = (y + 1) * ds // (s + DEAD_SHARES)
        x -= dx
        y -= dy
        if s == ds:
            # last shares out: rounding dust is dropped from the band (stays in the contract)
            x = 0
            y = 0
        if n == new_lowest and x == 0 and y == 0:
            new_lowest = n + 1
        if x > 0 or y > 0:
            new_highest = n
        self.bands_x[n] = x
        self.bands_y[n] = y
        total_x += dx
        total_y += dy

    if new_lowest != lowest:
        self.min_band = new_lowest
    if highest <= ns[1]:
        self.max_band = new_highest

    total_x //= BORROWED_PRECISION
    total_y //= COLLATERAL_PRECISION
    log Withdraw(provider=user, amount_borrowed=total_x, amount_collateral=total_y)
    self._fold_rate()
    return [total_x, total_y]


@internal
@view
def _band_value(x: uint256, y: uint256, p_o: uint256, p_up: uint256, p_down: uint256, want_y: bool) -> uint256:
    """
    @notice What a band's (x, y) is worth in one coin if the oracle price moves adiabatically:
            first trade in the band at constant p_o until the AMM price equals p_o (or the band
            is all-x / all-y when p_o is outside [p_down, p_up]), then convert what is left
            across the rest of the band at the geometric-mean price of the remaining range.
    @return Normalised x (want_y = False, "x_down") or y (want_y = True, "y_up")
    """
    x_o: uint256 = 0
    y_o: uint256 = 0
    if p_o > p_up or p_o < p_down:
        if x == 0 or y == 0:
            # one-sided band: convert at the band's mid AMM price p_o**3 / (p_up * p_down)
            p_mid: uint256 = self._cube_over(p_o, p_down) * (A - 1) // A
            if p_o > p_up:
                y_o = y
                if y == 0:
                    y_o = x * WAD // p_mid
            else:
                x_o = x
                if x == 0:
                    x_o = y * p_mid // WAD
        else:
            fg: uint256[2] = self._band_fg(self._get_y0(x, y, p_o, p_up), p_o, p_up)
            inv: uint256 = (fg[0] + x) * (fg[1] + y)
            if p_o > p_up:
                y_o = max(inv // fg[0], fg[1]) - fg[1]
            else:
                x_o = max(inv // fg[1], fg[0]) - fg[0]
        if p_o > p_up:
            if want_y:
                return y_o
            return y_o * p_up // SQRT_BAND_RATIO
        if want_y:
            return x_o * SQRT_BAND_RATIO // p_up
        return x_o

    # p_down <= p_o <= p_up: trade to p = p_o inside the band
    fg: uint256[2] = self._band_fg(self._get_y0(x, y, p_o, p_up), p_o, p_up)
    inv: uint256 = (fg[0] + x) * (fg[1] + y)
    y_o = max(isqrt(inv * WAD // p_o), fg[1]) - fg[1]
    x_o = max(inv // (fg[1] + y_o), fg[0]) - fg[0]
    if want_y:
        return y_o + x_o * WAD // isqrt(p_up * p_o)
    return x_o + y_o * isqrt(p_down * p_o) // WAD


@internal
@view
def _user_value(user: address, want_y: bool) -> uint256:
    """
    @notice Sum over the user's bands of share * _band_value, where only bands n <= active_band
            count their x and only bands n >= active_band their y. Band prices are stepped from
            p_oracle_up(n1) by x (A - 1) / A (rounded down). Shares are prorated against
            total_shares + DEAD_SHARES (rounded down), so this slightly under-estimates.
    @return Native units of the borrowed token (want_y = False) or the collateral
    """
    if self.user_shares[user][0] == 0:
        return 0
    ns: int256[2] = self.user_bands[user]
    p_o: uint256 = self._oracle()
    assert p_o != 0
    n_active: int256 = self.active_band
    p_next: uint256 = self._p_oracle_up(ns[0])
    total: uint256 = 0
    for i: uint256 in range(MAX_TICKS):
        n: int256 = ns[0] + convert(i, int256)
        if n > ns[1]:
            break
        p_up: uint256 = p_next
        p_next = p_up * (A - 1) // A
        x: uint256 = 0
        y: uint256 = 0
        if n <= n_active:
            x = self.bands_x[n]
        if n >= n_active:
            y = self.bands_y[n]
        if x == 0 and y == 0:
            continue
        share: uint256 = self.user_shares[user][i]
        shares_total: uint256 = self.total_shares[n]
        if share == 0 or shares_total == 0:
            continue
        total += self._band_value(x, y, p_o, p_up, p_next, want_y) * share // (shares_total + DEAD_SHARES)
    if want_y:
        return total // COLLATERAL_PRECISION
    return total // BORROWED_PRECISION


@external
@view
@nonreentrant
def get_x_down(user: address) -> uint256:
    """
    @return Borrowed tokens (native units) the user's bands would hold after the oracle price
            moved down through all of them with ideal arbitrage (the basis of health)
    """
    return self._user_value(user, False)


@external
@view
@nonreentrant
def get_y_up(user: address) -> uint256:
    """
    @return Collateral (native units) the user's bands would hold after the price moved up
            through all of them with ideal arbitrage
    """
    return self._user_value(user, True)


@external
@view
@nonreentrant
def get_sum_xy(user: address) -> uint256[2]:
    """
    @return [borrowed, collateral] currently owned by the user in native units: per band
            (balance + 1) * share // (total_shares + DEAD_SHARES), summed, then rounded down
    """
    if self.user_shares[user][0] == 0:
        return [0, 0]
    ns: int256[2] = self.user_bands[user]
    x: uint256 = 0
    y: uint256 = 0
    for i: uint256 in range(MAX_TICKS):
        n: int256 = ns[0] + convert(i, int256)
        if n > ns[1]:
            break
        share: uint256 = self.user_shares[user][i]
        s: uint256 = self.total_shares[n] + DEAD_SHARES
        x += (self.bands_x[n] + 1) * share // s
        y += (self.bands_y[n] + 1) * share // s
    return [x // BORROWED_PRECISION, y // COLLATERAL_PRECISION]


@external
@view
@nonreentrant
def get_xy(user: address) -> DynArray[uint256, MAX_TICKS][2]:
    """
    @return [borrowed by band, collateral by band] the user owns in bands n1 .. n2, native units:
            per band (balance + 1) * share // (total_shares + DEAD_SHARES) // precision
    """
    xs: DynArray[uint256, MAX_TICKS] = []
    ys: DynArray[uint256, MAX_TICKS] = []
    if self.user_shares[user][0] == 0:
        return [xs, ys]
    ns: int256[2] = self.user_bands[user]
    for i: uint256 in range(MAX_TICKS):
        n: int256 = ns[0] + convert(i, int256)
        if n > ns[1]:
            break
        share: uint256 = self.user_shares[user][i]
        s: uint256 = self.total_shares[n] + DEAD_SHARES
        xs.append((self.bands_x[n] + 1) * share // s // BORROWED_PRECISION)
        ys.append((self.bands_y[n] + 1) * share // s // COLLATERAL_PRECISION)
    return [xs, ys]


# ---------------------------------------------------------------------------------------------
# Trading
# ---------------------------------------------------------------------------------------------

@internal
@view
def _trade(pump: bool, amount: uint256, exact_in: bool, p_o: uint256, in_precision: uint256, out_precision: uint256) -> Trade:
    """
    @notice Walk the bands from active_band: pump (x in, y out) towards higher n, dump (y in,
            x out) towards lower n, filling each band along its invariant until `amount`
            (normalised input if exact_in, else normalised output) is used up, liquidity ends
            (max_band / min_band), 50 bands with liquidity were crossed, or the next band is more
            than ~50 bands away from p_o. A band is symmetric in (x, f) <-> (y, g), so one code
            path serves both directions with a = input side, b = output side.
    """
    t: Trade = empty(Trade)
    n: int256 = self.active_band
    edge: int256 = self.min_band
    if pump:
        edge = self.max_band
    p_up: uint256 = self._p_oracle_up(n)
    antifee: uint256 = WAD * WAD // (WAD - self.fee)  # gross input per unit of net input
    left: uint256 = amount
    started: bool = False

    for i: uint256 in range(MAX_TICKS + MAX_SKIP_TICKS):
        t.n_last = n
        x: uint256 = self.bands_x[n]
        y: uint256 = self.bands_y[n]
        if i > 0:
            # beyond the active band only the output side can hold liquidity
            if pump:
                x = 0
            else:
                y = 0
        a: uint256 = y  # input side
        b: uint256 = x  # output side
        if pump:
            a = x
            b = y
        done: bool = False

        if x != 0 or y != 0:
            if not started:
                t.n_first = n
                started = True
            fg: uint256[2] = self._band_fg(self._get_y0(x, y, p_o, p_up), p_o, p_up)
            fa: uint256 = fg[1]
            fb: uint256 = fg[0]
            if pump:
                fa = fg[0]
                fb = fg[1]
            inv: uint256 = (fg[0] + x) * (fg[1] + y)
            if b != 0 and fb != 0:
                if exact_in:
                    gross: uint256 = (inv // fb - fa - a) * antifee // WAD  # input that empties b
                    if gross >= left:
                        net: uint256 = left * WAD // antifee
                        new_b: uint256 = min(inv // (fa + a + net) - fb + 1, b)
                        t.amount_out += b - new_b
                        t.amount_in += left
                        a += left
                        b = new_b
                        done = True
                    else:
                        gross = max(gross, 1)
                        left -= gross
                        t.amount_in += gross
                        t.amount_out += b
                        a += gross
                        b = 0
                else:
                    if b >= left:
                        new_b: uint256 = b - left
                        gross: uint256 = ((inv + fb + new_b - 1) // (fb + new_b) - fa - a) * antifee
                        gross = (gross + WAD - 1) // WAD
                        t.amount_out += left
                        t.amount_in += gross
                        a += gross
                        b = new_b
                        done = True
                    else:
                        gross: uint256 = max((inv // fb - fa - a) * antifee // WAD, 1)
                        left -= b
                        t.amount_in += gross
                        t.amount_out += b
                        a += gross
                        b = 0

        if started:
            t.band_in.append(a)
            t.last_out = b
        if done or n == edge or len(t.band_in) == MAX_TICKS:
            break
        p_ratio: uint256 = p_up * WAD // p_o
        if pump:
            if p_ratio < WAD * WAD // MAX_ORACLE_DN_POW:
                break
            n += 1
            p_up = p_up * (A - 1) // A
        else:
            if p_ratio > MAX_ORACLE_DN_POW:
                break
            n -= 1
            p_up = p_up * A // (A - 1)

    # input rounded up and output rounded down to whole native units
    t.amount_in = (t.amount_in + in_precision - 1) // in_precision * in_precision
    t.amount_out = t.amount_out // out_precision * out_precision
    return t


@internal
@view
def _quote(i: uint256, j: uint256, amount: uint256, exact_in: bool) -> Trade:
    assert (i == 0 and j == 1) or (i == 1 and j == 0), "Wrong index"
    t: Trade = empty(Trade)
    if amount == 0:
        return t
    in_precision: uint256 = COLLATERAL_PRECISION
    out_precision: uint256 = BORROWED_PRECISION
    if i == 0:
        in_precision = BORROWED_PRECISION
        out_precision = COLLATERAL_PRECISION
    scaled: uint256 = amount * out_precision
    if exact_in:
        scaled = amount * in_precision
    t = self._trade(i == 0, scaled, exact_in, self._oracle(), in_precision, out_precision)
    t.amount_in //= in_precision
    t.amount_out //= out_precision
    return t


@external
@view
@nonreentrant
def get_dy(i: uint256, j: uint256, in_amount: uint256) -> uint256:
    """
    @return Output (native units of coin j) for `in_amount` of coin i (may be a partial fill)
    """
    return self._quote(i, j, in_amount, True).amount_out


@external
@view
@nonreentrant
def get_dxdy(i: uint256, j: uint256, in_amount: uint256) -> (uint256, uint256):
    """
    @return (input actually used, output) for `in_amount` of coin i, native units
    """
    t: Trade = self._quote(i, j, in_amount, True)
    return (t.amount_in, t.amount_out)


@external
@view
@nonreentrant
def get_dx(i: uint256, j: uint256, out_amount: uint256) -> uint256:
    """
    @return Input (native units of coin i) needed to receive `out_amount` of coin j
    """
    return self._quote(i, j, out_amount, False).amount_in


@external
@view
@nonreentrant
def get_dydx(i: uint256, j: uint256, out_amount: uint256) -> (uint256, uint256):
    """
    @return (output obtainable, input needed) when asking for `out_amount` of coin j
    """
    t: Trade = self._quote(i, j, out_amount, False)
    return (t.amount_out, t.amount_in)


@internal
def _exchange(i: uint256, j: uint256, amount: uint256, limit: uint256, _for: address, exact_in: bool) -> uint256[2]:
    assert (i == 0 and j == 1) or (i == 1 and j == 0), "Wrong index"
    p_o: uint256 = extcall self.price_oracle_contract.price_w()
    if amount == 0:
        return [0, 0]

    pump: bool = i == 0
    in_coin: IERC20 = COLLATERAL_TOKEN
    out_coin: IERC20 = BORROWED_TOKEN
    in_precision: uint256 = COLLATERAL_PRECISION
    out_precision: uint256 = BORROWED_PRECISION
    if pump:
        in_coin = BORROWED_TOKEN
        out_coin = COLLATERAL_TOKEN
        in_precision = BORROWED_PRECISION
        out_precision = COLLATERAL_PRECISION

    scaled: uint256 = amount * out_precision
    if exact_in:
        scaled = amount * in_precision
    t: Trade = self._trade(pump, scaled, exact_in, p_o, in_precision, out_precision)
    in_done: uint256 = t.amount_in // in_precision
    out_done: uint256 = t.amount_out // out_precision
    if exact_in:
        assert out_done >= limit, "Slippage"
    else:
        assert in_done <= limit, "Slippage"
    if out_done == 0 or in_done == 0:
        return [0, 0]

    assert extcall in_coin.transferFrom(msg.sender, self, in_done, default_return_value=True)
    assert extcall out_coin.transfer(_for, out_done, default_return_value=True)

    n: int256 = t.n_first
    for k: uint256 in range(MAX_TICKS):
        if k == len(t.band_in):
            break
        other: uint256 = 0
        if n == t.n_last:
            other = t.last_out
        if pump:
            self.bands_x[n] = t.band_in[k]
            self.bands_y[n] = other
            n += 1
        else:
            self.bands_y[n] = t.band_in[k]
            self.bands_x[n] = other
            n -= 1
    self.active_band = t.n_last

    log TokenExchange(buyer=_for, sold_id=i, tokens_sold=in_done, bought_id=j, tokens_bought=out_done)
    return [in_done, out_done]


@external
@nonreentrant
def exchange(i: uint256, j: uint256, in_amount: uint256, min_amount: uint256, _for: address = msg.sender) -> uint256[2]:
    """
    @notice Sell up to `in_amount` of coin i (pulled from msg.sender) for coin j (sent to `_for`).
            If liquidity runs out, only part of the input is used.
    @return [input used, output received], native units; [0, 0] (no transfer) if nothing trades
    """
    return self._exchange(i, j, in_amount, min_amount, _for, True)


@external
@nonreentrant
def exchange_dy(i: uint256, j: uint256, out_amount: uint256, max_amount: uint256, _for: address = msg.sender) -> uint256[2]:
    """
    @notice Buy `out_amount` of coin j (or what liquidity allows) paying at most `max_amount` of coin i
    @return [input used, output received], native units
    """
    return self._exchange(i, j, out_amount, max_amount, _for, False)


@external
@view
@nonreentrant
def get_amount_for_price(p: uint256) -> (uint256, bool):
    """
    @notice Input needed to move the AMM price to `p` (18 decimals), fee included
    @return (amount in native units of the input coin, pump) — pump = True means coin 0 in
    """
    n: int256 = self.active_band
    p_o: uint256 = self._oracle()
    p_up: uint256 = self._p_oracle_up(n)
    pump: bool = p >= self._get_p(n, self.bands_x[n], self.bands_y[n])
    edge: int256 = self.min_band
    if pump:
        edge = self.max_band
    amount: uint256 = 0
    crossed: uint256 = 0

    for _i: uint256 in range(MAX_TICKS + MAX_SKIP_TICKS):
        assert p_up > 0
        x: uint256 = self.bands_x[n]
        y: uint256 = self.bands_y[n]
        p_low: uint256 = self._cube_over(p_o, p_up)  # AMM price when the band holds only y
        p_high: uint256 = self._cube_over(p_o, p_up * (A - 1) // A)  # ... only x
        inv: uint256 = 0
        fg: uint256[2] = [0, 0]
        if x != 0 or y != 0:
            fg = self._band_fg(self._get_y0(x, y, p_o, p_up), p_o, p_up)
            inv = (fg[0] + x) * (fg[1] + y)
            crossed += 1
        if p >= p_low and p <= p_high:
            if inv != 0:
                y_new: uint256 = max(isqrt(inv * WAD // p), fg[1]) - fg[1]
                x_new: uint256 = max(inv // (fg[1] + y_new), fg[0]) - fg[0]
                if pump:
                    amount += max(x_new, x) - x
                else:
                    amount += max(y_new, y) - y
            break
        p_ratio: uint256 = p_up * WAD // p_o
        if pump:
            if inv != 0 and fg[1] != 0:
                amount += inv // fg[1] - fg[0] - x
            if n == edge or crossed == MAX_TICKS or p_ratio < WAD * WAD // MAX_ORACLE_DN_POW:
                break
            n += 1
            p_up = p_up * (A - 1) // A
        else:
            if inv != 0 and fg[0] != 0:
                amount += inv // fg[0] - fg[1] - y
            if n == edge or crossed == MAX_TICKS or p_ratio > MAX_ORACLE_DN_POW:
                break
            n -= 1
            p_up = p_up * A // (A - 1)

    amount = amount * WAD // (WAD - self.fee)
    if amount == 0:
        return 0, pump
    precision: uint256 = COLLATERAL_PRECISION
    if pump:
        precision = BORROWED_PRECISION
    return (amount - 1) // precision + 1, pump


# ---------------------------------------------------------------------------------------------
# Admin (the Controller)
# ---------------------------------------------------------------------------------------------

@external
@nonreentrant
def set_rate(rate: uint256) -> uint256:
    """
    @notice Set the interest rate (1e18 = 100% per second); the accrued multiplier is saved first
    @return rate_mul at the time of the change
    """
    assert msg.sender == self.admin
    self._fold_rate()
    self.rate = rate
    log SetRate(rate=rate, rate_mul=self.rate_mul, time=block.timestamp)
    return self.rate_mul


@external
@nonreentrant
def set_fee(fee: uint256):
    """
    @param fee Swap fee, 1e18 = 100%
    """
    assert msg.sender == self.admin
    assert fee < MAX_FEE, "Fee"
    self.fee = fee
    log SetFee(fee=fee)
