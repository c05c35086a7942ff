"""LLAMMA band maths — pure integers mirroring contracts/llamma/AMM.vy (+ _band_math.vy) and the
controller's `_health` (docs/PROTOCOLS.md §B.3, §B.5, §B.6): the band grid, the AMM's own exchange
(`get_amount_for_price` + `exchange`, i.e. what an arbitrageur does after an oracle move), a user's
`get_x_down` / `get_sum_xy` on the resulting band state, and `health(user, full=True)` from them.

The model of "the oracle moved to p": the AMM is arbitraged like keeper/devtools/llamma_env.arbitrage
does — `amount, pump = get_amount_for_price(p)` then `exchange(i, j, amount, 0)` at oracle p, repeated
while it still trades (one exchange crosses at most 50 bands with liquidity) — then health is the
controller's formula on that state at oracle p, with debt and liquidation discount as read at head.

The one input not exact to the wei: a user's share of each band (`user_shares / (total_shares + DEAD)`,
not exposed by the AMM) is taken from `get_xy(user)` as (user amount · precision) / (band balance + 1) on
the side where the user holds more native units, so each band's contribution is off by at most one
native unit's share of it (relative ≤ 1 / the user's native amount in that band).

Units: stablecoin amounts and prices 1e18 (band balances normalised to 18 decimals, as the AMM stores
them); user amounts from get_xy and the results of `user_xy` in native units; health 1e18.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import isqrt

WAD = 10**18
RAY = 10**36
POW_BITS = 14
MAX_ABS_BAND = 2**POW_BITS - 1
MAX_TICKS = 50
MAX_SKIP_TICKS = 1024
ARBITRAGE_ROUNDS = 16  # exchanges per move (each crosses ≤ 50 bands with liquidity)


class BandMathError(ArithmeticError):
    """Where the contract would revert (uint256 underflow, band out of range, zero price)."""


def _sub(a: int, b: int) -> int:
    if b > a:
        raise BandMathError("uint256 underflow")
    return a - b


def ratio_pow(A: int, n: int) -> int:  # noqa: N803 - the contracts' name
    """_band_math.ratio_pow: ((A − 1)/A)**n in 1e36, every step rounded down; for n < 0, 1e72 // r**|n|."""
    m = abs(n)
    if m > MAX_ABS_BAND:
        raise BandMathError("Band out of range")
    step = (A - 1) * RAY // A
    acc = RAY
    for _ in range(POW_BITS):
        if m % 2 == 1:
            acc = acc * step // RAY
        m >>= 1
        if m == 0:
            break
        step = step * step // RAY
    if n < 0:
        if acc < WAD:
            raise BandMathError("Band out of range")
        return RAY * RAY // acc
    return acc


def cube_over(p_o: int, p_edge: int) -> int:
    """p_o**3 / p_edge**2 as the AMM rounds it: the AMM price of a band edge at oracle price p_o."""
    return p_o * p_o // p_edge * p_o // p_edge


@dataclass
class BandState:
    """One AMM's state at a block: what its exchange and value maths read. `bands` holds (x, y) of every
    band with liquidity (normalised 1e18 units); absent bands are empty."""

    A: int
    fee: int
    base_price: int  # p_oracle_up(0) at the block (BASE_PRICE · rate_mul)
    active_band: int
    min_band: int
    max_band: int
    bands: dict[int, tuple[int, int]] = field(default_factory=dict)
    borrowed_precision: int = 1
    collateral_precision: int = 1
    price_oracle: int = 0  # the oracle price the state was read at (the AMM is assumed arbitraged to it)

    def copy(self) -> BandState:
        return BandState(
            self.A,
            self.fee,
            self.base_price,
            self.active_band,
            self.min_band,
            self.max_band,
            dict(self.bands),
            self.borrowed_precision,
            self.collateral_precision,
            self.price_oracle,
        )

    # ---- the grid ----
    def p_oracle_up(self, n: int) -> int:
        return self.base_price * ratio_pow(self.A, n) // RAY

    def p_oracle_down(self, n: int) -> int:
        return self.p_oracle_up(n + 1)

    @property
    def max_oracle_dn_pow(self) -> int:
        return ratio_pow(self.A, -50) // WAD

    @property
    def sqrt_band_ratio(self) -> int:
        return isqrt(RAY * self.A // (self.A - 1))

    def x(self, n: int) -> int:
        b = self.bands.get(n)
        return b[0] if b else 0

    def y(self, n: int) -> int:
        b = self.bands.get(n)
        return b[1] if b else 0

    # ---- one band ----
    def get_y0(self, x: int, y: int, p_o: int, p_up: int) -> int:
        A = self.A
        if p_o == 0:
            raise BandMathError("zero oracle price")
        b = 0
        if x != 0:
            b = p_up * (A - 1) * x // p_o
        if y != 0:
            b += A * p_o * p_o // p_up * y // WAD
        if x != 0 and y != 0:
            d = b * b + 4 * A * p_o * y // WAD * x
            return (b + isqrt(d)) * WAD // (2 * A * p_o)
        return b * WAD // (A * p_o)

    def band_fg(self, y0: int, p_o: int, p_up: int) -> tuple[int, int]:
        A = self.A
        return A * y0 * p_o // p_up * p_o // WAD, (A - 1) * y0 * p_up // p_o

    def get_p(self, n: int, x: int, y: int, p_o: int) -> int:
        """AMM._get_p: the AMM price of band n holding (x, y) at oracle p_o."""
        p_up = self.p_oracle_up(n)
        if x == 0:
            p_cd = cube_over(p_o, p_up)
            if y == 0:
                return p_cd * self.A // (self.A - 1)
            return p_cd
        if y == 0:
            return cube_over(p_o, p_up * (self.A - 1) // self.A)
        f, g = self.band_fg(self.get_y0(x, y, p_o, p_up), p_o, p_up)
        return (f + x) * WAD // (g + y)

    def band_value(self, x: int, y: int, p_o: int, p_up: int, p_down: int) -> int:
        """AMM._band_value(want_y = False): the band's (x, y) in the borrowed token if the oracle moved
        down through it with ideal arbitrage (normalised)."""
        A = self.A
        if p_o > p_up or p_o < p_down:
            x_o = y_o = 0
            if x == 0 or y == 0:
                p_mid = cube_over(p_o, p_down) * (A - 1) // A
                if p_o > p_up:
                    y_o = y if y != 0 else x * WAD // p_mid
                else:
                    x_o = x if x != 0 else y * p_mid // WAD
            else:
                f, g = self.band_fg(self.get_y0(x, y, p_o, p_up), p_o, p_up)
                inv = (f + x) * (g + y)
                if p_o > p_up:
                    y_o = max(inv // f, g) - g
                else:
                    x_o = max(inv // g, f) - f
            if p_o > p_up:
                return y_o * p_up // self.sqrt_band_ratio
            return x_o
        f, g = self.band_fg(self.get_y0(x, y, p_o, p_up), p_o, p_up)
        inv = (f + x) * (g + y)
        y_o = max(isqrt(inv * WAD // p_o), g) - g
        x_o = max(inv // (g + y_o), f) - f
        return x_o + y_o * isqrt(p_down * p_o) // WAD

    # ---- the exchange ----
    def amount_for_price(self, p: int, p_o: int) -> tuple[int, bool]:
        """AMM.get_amount_for_price(p) at oracle p_o: (input in native units, pump = coin 0 in)."""
        A = self.A
        n = self.active_band
        p_up = self.p_oracle_up(n)
        pump = p >= self.get_p(n, self.x(n), self.y(n), p_o)
        edge = self.max_band if pump else self.min_band
        dn_pow = self.max_oracle_dn_pow
        amount = 0
        crossed = 0
        for _ in range(MAX_TICKS + MAX_SKIP_TICKS):
            if p_up <= 0:
                raise BandMathError("p_up = 0")
            x, y = self.x(n), self.y(n)
            p_low = cube_over(p_o, p_up)
            p_high = cube_over(p_o, p_up * (A - 1) // A)
            inv = 0
            f = g = 0
            if x != 0 or y != 0:
                f, g = self.band_fg(self.get_y0(x, y, p_o, p_up), p_o, p_up)
                inv = (f + x) * (g + y)
                crossed += 1
            if p_low <= p <= p_high:
                if inv != 0:
                    y_new = max(isqrt(inv * WAD // p), g) - g
                    x_new = max(inv // (g + y_new), f) - f
                    amount += max(x_new, x) - x if pump else max(y_new, y) - y
                break
            p_ratio = p_up * WAD // p_o
            if pump:
                if inv != 0 and g != 0:
                    amount += _sub(_sub(inv // g, f), x)
                if n == edge or crossed == MAX_TICKS or p_ratio < WAD * WAD // dn_pow:
                    break
                n += 1
                p_up = p_up * (A - 1) // A
            else:
                if inv != 0 and f != 0:
                    amount += _sub(_sub(inv // f, g), y)
                if n == edge or crossed == MAX_TICKS or p_ratio > dn_pow:
                    break
                n -= 1
                p_up = p_up * A // (A - 1)
        amount = amount * WAD // (WAD - self.fee)
        if amount == 0:
            return 0, pump
        precision = self.borrowed_precision if pump else self.collateral_precision
        return (amount - 1) // precision + 1, pump

    def exchange(self, pump: bool, amount: int, p_o: int) -> tuple[int, int]:
        """AMM.exchange(i, j, amount, 0) at oracle p_o (exact input, native units), applied to this state.
        Returns (input used, output) in native units; (0, 0) and no change when nothing trades."""
        A = self.A
        in_prec, out_prec = (
            (self.borrowed_precision, self.collateral_precision) if pump else (self.collateral_precision, self.borrowed_precision)
        )
        n = self.active_band
        edge = self.max_band if pump else self.min_band
        p_up = self.p_oracle_up(n)
        antifee = WAD * WAD // (WAD - self.fee)
        dn_pow = self.max_oracle_dn_pow
        left = amount * in_prec
        started = False
        amount_in = amount_out = 0
        n_first = n_last = n
        band_in: list[int] = []
        last_out = 0
        for i in range(MAX_TICKS + MAX_SKIP_TICKS):
            n_last = n
            x, y = self.x(n), self.y(n)
            if i > 0:
                if pump:
                    x = 0
                else:
                    y = 0
            a, b = (x, y) if pump else (y, x)
            done = False
            if x != 0 or y != 0:
                if not started:
                    n_first = n
                    started = True
                f, g = self.band_fg(self.get_y0(x, y, p_o, p_up), p_o, p_up)
                fa, fb = (f, g) if pump else (g, f)
                inv = (f + x) * (g + y)
                if b != 0 and fb != 0:
                    gross = _sub(_sub(inv // fb, fa), a) * antifee // WAD  # input that empties b
                    if gross >= left:
                        net = left * WAD // antifee
                        new_b = min(_sub(inv // (fa + a + net), fb) + 1, b)
                        amount_out += b - new_b
                        amount_in += left
                        a += left
                        b = new_b
                        done = True
                    else:
                        gross = max(gross, 1)
                        left -= gross
                        amount_in += gross
                        amount_out += b
                        a += gross
                        b = 0
            if started:
                band_in.append(a)
                last_out = b
            if done or n == edge or len(band_in) == MAX_TICKS:
                break
            p_ratio = p_up * WAD // p_o
            if pump:
                if p_ratio < WAD * WAD // dn_pow:
                    break
                n += 1
                p_up = p_up * (A - 1) // A
            else:
                if p_ratio > dn_pow:
                    break
                n -= 1
                p_up = p_up * A // (A - 1)
        amount_in = (amount_in + in_prec - 1) // in_prec * in_prec
        amount_out = amount_out // out_prec * out_prec
        in_done, out_done = amount_in // in_prec, amount_out // out_prec
        if in_done == 0 or out_done == 0:
            return 0, 0
        m = n_first
        for a_new in band_in:
            other = last_out if m == n_last else 0
            if pump:
                self._set(m, a_new, other)
                m += 1
            else:
                self._set(m, other, a_new)
                m -= 1
        self.active_band = n_last
        return in_done, out_done

    def _set(self, n: int, x: int, y: int) -> None:
        if x == 0 and y == 0:
            self.bands.pop(n, None)
        else:
            self.bands[n] = (x, y)

    def arbitraged(self, p_o: int) -> BandState:
        """A copy of this state after arbitrage to oracle p_o: llamma_env.arbitrage's exchange, repeated
        while it trades (at most ARBITRAGE_ROUNDS)."""
        st = self.copy()
        st.price_oracle = p_o
        for _ in range(ARBITRAGE_ROUNDS):
            amount, pump = st.amount_for_price(p_o, p_o)
            if amount == 0:
                break
            _in, out = st.exchange(pump, amount, p_o)
            if out == 0:
                break
        return st


@dataclass(frozen=True)
class UserBands:
    """A user's bands n1..n2 and, per band, its share as a fraction num/den (from get_xy at head)."""

    n1: int
    n2: int
    share: tuple[tuple[int, int], ...]  # (num, den) per band n1 + i; den > 0
    # bound on |local health − the contract's| from the shares' rounding (1e18; 0 when the shares are exact)
    error: int = 0

    @classmethod
    def from_xy(cls, n1: int, n2: int, xs: list[int], ys: list[int], st: BandState) -> UserBands:
        """Shares from get_xy's per-band amounts (native units, rounded down: taken at the middle of their
        rounding interval) and the band balances at the same block, on the side with more native units."""
        out = []
        cp, bp = st.collateral_precision, st.borrowed_precision
        least = 0  # the smallest native amount a share was taken from
        for i, n in enumerate(range(n1, n2 + 1)):
            ux = xs[i] if i < len(xs) else 0
            uy = ys[i] if i < len(ys) else 0
            bx, by = st.x(n), st.y(n)
            # a share is < 1 of (balance + 1): share < total_shares + DEAD
            if by > 0 and (uy >= ux or bx == 0):
                out.append((min(uy * cp + cp // 2, by), by + 1))
                used = uy
            elif bx > 0:
                out.append((min(ux * bp + bp // 2, bx), bx + 1))
                used = ux
            else:
                out.append((0, 1))  # an empty band stays empty: arbitrage puts nothing into it
                continue
            least = used if least == 0 else min(least, used)
        # each band's value is off by ≤ 1/(2·amount) relative; health (≤ a few × 1e18) by ≤ 4e18/least
        return cls(n1, n2, tuple(out), 4 * WAD // max(least, 1))


def x_down(st: BandState, u: UserBands, p_o: int) -> int:
    """AMM.get_x_down(user) on state `st` at oracle p_o (native borrowed units)."""
    A = st.A
    p_next = st.p_oracle_up(u.n1)
    total = 0
    for i, n in enumerate(range(u.n1, u.n2 + 1)):
        p_up = p_next
        p_next = p_up * (A - 1) // A
        x = st.x(n) if n <= st.active_band else 0
        y = st.y(n) if n >= st.active_band else 0
        if x == 0 and y == 0:
            continue
        num, den = u.share[i]
        total += st.band_value(x, y, p_o, p_up, p_next) * num // den
    return total // st.borrowed_precision


def user_xy(st: BandState, u: UserBands) -> tuple[int, int]:
    """AMM.get_sum_xy(user) on state `st`: (borrowed, collateral) in native units."""
    x = y = 0
    for i, n in enumerate(range(u.n1, u.n2 + 1)):
        num, den = u.share[i]
        x += (st.x(n) + 1) * num // den
        y += (st.y(n) + 1) * num // den
    return x // st.borrowed_precision, y // st.collateral_precision


def health_full(st: BandState, u: UserBands, debt: int, discount: int, p_o: int) -> int:
    """Controller._health(user, debt, full=True, discount) on state `st` at oracle p_o (1e18): x_down·(1 − ld)
    // debt − 1, plus (p_o − p_up(n1))·y·COLLATERAL_PRECISION // (debt·BORROWED_PRECISION) while the loan is
    above the active band and the oracle above its top band."""
    if debt <= 0:
        raise ZeroDivisionError("Loan doesn't exist")
    h = x_down(st, u, p_o) * (WAD - discount) // debt - WAD
    if u.n1 > st.active_band:
        p_up = st.p_oracle_up(u.n1)
        if p_o > p_up:
            y = user_xy(st, u)[1]
            h += (p_o - p_up) * y * st.collateral_precision // (debt * st.borrowed_precision)
    return h


def health_at(st: BandState, u: UserBands, debt: int, discount: int, p_o: int) -> int:
    """Full health after the oracle moved to p_o and the AMM was arbitraged to it (see the module doc)."""
    return health_full(st.arbitraged(p_o), u, debt, discount, p_o)


def soft_liquidation_range(st: BandState, n1: int, n2: int) -> tuple[int, int]:
    """(p_oracle_up(n1), p_oracle_down(n2)) = Controller.user_prices: where soft liquidation starts (the
    top of the loan's top band) and where its collateral is all converted (the bottom of its last band)."""
    return st.p_oracle_up(n1), st.p_oracle_down(n2)


def liquidation_price(st: BandState, u: UserBands, debt: int, discount: int, p_now: int, *, rel_tol: int = 10**9) -> int | None:
    """The oracle price at which full health (after arbitrage to it, `health_at`) crosses 0: the highest
    price found with health < −u.error (so < 0 on the contract too, whatever the shares' rounding),
    bracketed by one with health ≥ −u.error within p/rel_tol (1e-9 by default) — bisection, which assumes
    health rises with the price (property-tested). Searched below `p_now` when
    the loan is healthy there (down to p_now / 2**20), above it when it is not (up to p_now · 2**8).
    None when there is no crossing in that range (e.g. a debt the fully converted bands still cover)."""

    def h(p: int) -> int:
        return health_at(st, u, debt, discount, p) + u.error

    if h(p_now) >= 0:
        hi = p_now
        lo = p_now // 2
        while h(lo) >= 0:
            hi = lo
            lo //= 2
            if lo < p_now >> 20 or lo == 0:
                return None
    else:
        lo = p_now
        hi = p_now * 2
        while h(hi) < 0:
            lo = hi
            hi *= 2
            if hi > p_now << 8:
                return None
    while hi - lo > max(lo // rel_tol, 1):
        mid = (lo + hi) // 2
        if h(mid) < 0:
            lo = mid
        else:
            hi = mid
    return lo
