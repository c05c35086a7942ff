"""Fee bidding (pure, integers only): the tip a liquidation offers, under the caps and break-even.

Units: fees in wei per gas; reward, min_profit in the value token (1e18); native_price in value-token
1e18 units per native token (1e18 wei), as keeper.execution.break_even_fee_per_gas takes them.

- "fixed": the quote's tip (gas.priority_fee_gwei under max_priority_fee_gwei).
- "share": tip = ⌊share × (reward·1e18 − gas·next_base_fee·native_price) / (gas·native_price)⌋, i.e. the
  share of what is left of the reward after the base fee, spread over the gas; never below the quote's tip.
- A rival seen in the mempool for the same position: tip ≥ rival's effective tip + 1 wei.
- Then the caps, in this order: tip ≤ cap_tip; max fee = the quote's max fee with the tip swapped in
  (≥ next base fee + tip) ≤ cap_fee; max fee ≤ break-even (unless None: the operator allows unprofitable
  sends); tip ≤ max fee.

Legacy chains (gasPrice only, `FeeQuote.legacy`): the quote's gasPrice plays the base fee's part: the
share policy raises gasPrice by ⌊share × (reward·1e18 − gas·gasPrice·native_price) / (gas·native_price)⌋,
a rival's gasPrice is beaten by 1 wei; under cap_fee and break-even (there is no tip to cap_tip).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from keeper.gas import FeeQuote

WAD = 10**18

SENT = ""
UNPROFITABLE = "unprofitable"  # break-even (or cap_fee) leaves less than next base fee + the floor tip
OUTBID_UNPROFITABLE = "outbid_unprofitable"  # a rival's tip cannot be beaten under break-even and the caps


@dataclass(frozen=True)
class Bid:
    fees: FeeQuote  # after every cap: what would be signed
    outbids_rival: bool | None  # None: no rival given; else whether our effective tip beats the rival's
    reason: str  # "" = send; UNPROFITABLE / OUTBID_UNPROFITABLE = skip

    @property
    def send(self) -> bool:
        return self.reason == SENT

    @property
    def tip(self) -> int:
        """Effective tip per gas at the next block: what the block builder ranks by."""
        return self.fees.expected_fee_per_gas - self.fees.next_base_fee


def share_fraction(share: Decimal | tuple[int, int]) -> tuple[int, int]:
    """(num, den), den > 0, 0 ≤ num ≤ den — exactly the Decimal's value."""
    if isinstance(share, Decimal):
        if not share.is_finite():
            raise ValueError(f"share must be finite, got {share}")
        num, den = share.as_integer_ratio()
    else:
        num, den = share
    if den <= 0 or num < 0 or num > den:
        raise ValueError(f"share must be between 0 and 1, got {num}/{den}")
    return num, den


def share_tip(num: int, den: int, reward: int, gas: int, native_price: int, base: int) -> int:
    """⌊num/den × (reward·1e18 − gas·base·native_price) / (gas·native_price)⌋ wei per gas, ≥ 0: the share of
    the reward left after paying `base` per gas, per gas."""
    if gas <= 0 or native_price <= 0:
        raise ValueError("the share policy needs gas > 0 and native_price > 0")
    left = reward * WAD - gas * base * native_price
    if left <= 0 or num == 0:
        return 0
    return num * left // (den * gas * native_price)


def bid_fees(
    quote: FeeQuote,
    *,
    policy: str,
    share: Decimal | tuple[int, int],
    reward: int,
    min_profit: int,
    gas: int,
    native_price: int,
    break_even_fee: int | None,
    cap_fee: int,
    cap_tip: int,
    rival_tip: int | None = None,
) -> Bid:
    """The fees for one liquidation in the next block. `quote`: FeePolicy.quote for that block (its tip is
    the configured fixed tip, the floor of every policy). `break_even_fee`: execution.break_even_fee_per_gas
    (reward, min_profit, gas, native_price), or None when the operator allows unprofitable sends (then
    `min_profit` plays no part). `rival_tip`: effective tip per gas of a rival's pending transaction for
    the same position (mempool.RivalWatch), or None."""
    del min_profit  # already inside break_even_fee; kept in the signature so call sites read completely
    if policy not in ("fixed", "share"):
        raise ValueError(f"unknown tip policy {policy!r} (expected 'fixed' or 'share')")
    num, den = share_fraction(share)
    if quote.legacy:
        return _bid_legacy(quote, policy, num, den, reward, gas, native_price, break_even_fee, cap_fee, rival_tip)
    nb = quote.next_base_fee
    floor_tip = min(quote.max_priority_fee_per_gas, cap_tip)
    tip = quote.max_priority_fee_per_gas
    if policy == "share":
        tip = max(tip, share_tip(num, den, reward, gas, native_price, nb))
    if rival_tip is not None:
        tip = max(tip, rival_tip + 1)
    tip = min(tip, cap_tip)
    max_fee = min(cap_fee, quote.max_fee_per_gas - quote.max_priority_fee_per_gas + tip)
    max_fee = max(max_fee, min(cap_fee, nb + tip))
    if break_even_fee is not None:
        max_fee = min(max_fee, break_even_fee)
    max_fee = max(max_fee, 0)
    tip = min(tip, max_fee)
    expected = min(max_fee, nb + tip)
    fees = FeeQuote(max_fee, tip, expected, nb)
    reason = SENT
    if expected < nb + floor_tip:  # cannot even pay the next base fee and the configured tip
        reason = UNPROFITABLE
    outbids = None if rival_tip is None else expected - nb > rival_tip
    if reason == SENT and outbids is False:
        reason = OUTBID_UNPROFITABLE
    return Bid(fees, outbids, reason)


def _bid_legacy(
    quote: FeeQuote,
    policy: str,
    num: int,
    den: int,
    reward: int,
    gas: int,
    native_price: int,
    break_even_fee: int | None,
    cap_fee: int,
    rival_tip: int | None,
) -> Bid:
    base_price = quote.max_fee_per_gas  # the node's gas price: what inclusion costs
    nb = quote.next_base_fee  # 0 on a chain without a base fee
    price = base_price
    if policy == "share":
        price += share_tip(num, den, reward, gas, native_price, base_price)
    if rival_tip is not None:
        price = max(price, nb + rival_tip + 1)
    price = min(price, cap_fee)
    if break_even_fee is not None:
        price = min(price, break_even_fee)
    price = max(price, 0)
    fees = FeeQuote(price, 0, price, nb, legacy=True)
    reason = SENT if price >= base_price else UNPROFITABLE
    outbids = None if rival_tip is None else price - nb > rival_tip
    if reason == SENT and outbids is False:
        reason = OUTBID_UNPROFITABLE
    return Bid(fees, outbids, reason)


def _ceil_bump(value: int) -> int:
    """The least value a node accepts as a replacement of `value`: ≥ +10 % (ceil) and ≥ +1 wei."""
    return max(-(-value * 11 // 10), value + 1)


def outbid_replacement(
    old: FeeQuote,
    rival_tip: int,
    break_even_fee: int | None,
    cap_fee: int,
    cap_tip: int,
    *,
    next_base_fee: int | None = None,
) -> FeeQuote | None:
    """Fees to replace OUR pending transaction `old` at the same nonce so that its effective tip beats
    `rival_tip` by ≥ 1 wei and both fee fields rise ≥ 10 % (+1 wei) over `old` (nodes' replacement rule,
    txs._room_to_replace); None when that needs more than break-even (None: no limit) or the caps.
    `next_base_fee`: the next block's base fee (default: the one `old` was quoted at)."""
    nb = old.next_base_fee if next_base_fee is None else next_base_fee
    limit = cap_fee if break_even_fee is None else min(cap_fee, break_even_fee)
    if old.legacy:
        price = max(_ceil_bump(old.max_fee_per_gas), nb + rival_tip + 1)
        if price > limit:
            return None
        return FeeQuote(price, 0, price, nb, legacy=True)
    tip = max(_ceil_bump(old.max_priority_fee_per_gas), rival_tip + 1)
    if tip > cap_tip:
        return None
    floor_fee = _ceil_bump(old.max_fee_per_gas)
    # keep the base-fee headroom `old` had, with the new tip on top
    want = max(old.max_fee_per_gas - old.max_priority_fee_per_gas + tip, nb + tip, floor_fee)
    max_fee = min(want, limit)
    if max_fee < floor_fee or max_fee < nb + rival_tip + 1 or max_fee < tip:
        return None
    return FeeQuote(max_fee, tip, min(max_fee, nb + tip), nb)
