"""EIP-1559 fee quotes under the operator's caps, and the fee per gas the keeper expects to pay."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from keeper.config import GasConfig
from keeper.units import GWEI, to_units

ELASTICITY = 2
BASE_FEE_CHANGE_DENOMINATOR = 8


def next_base_fee(base_fee: int, gas_used: int, gas_limit: int) -> int:
    """The base fee of the block after one with (base_fee, gas_used, gas_limit) — EIP-1559 exactly."""
    target = gas_limit // ELASTICITY
    if target == 0 or gas_used == target:
        return base_fee
    if gas_used > target:
        delta = max(base_fee * (gas_used - target) // target // BASE_FEE_CHANGE_DENOMINATOR, 1)
        return base_fee + delta
    delta = base_fee * (target - gas_used) // target // BASE_FEE_CHANGE_DENOMINATOR
    return base_fee - delta


class FeeCapExceeded(Exception):
    """The fee needed for inclusion is above the configured cap: wait instead of overpaying."""


@dataclass(frozen=True)
class FeeQuote:
    max_fee_per_gas: int  # wei
    max_priority_fee_per_gas: int  # wei
    expected_fee_per_gas: int  # wei the keeper expects to pay per gas: next base fee + tip, ≤ max fee
    next_base_fee: int  # wei
    legacy: bool = False  # chain without EIP-1559: gasPrice = max_fee_per_gas

    def capped(self, max_fee: int) -> FeeQuote:
        """The same quote with max fee per gas (and so the tip) no higher than `max_fee` wei."""
        fee = min(self.max_fee_per_gas, max_fee)
        tip = min(self.max_priority_fee_per_gas, fee)
        expected = fee if self.legacy else min(fee, self.next_base_fee + tip)
        return FeeQuote(fee, tip, expected, self.next_base_fee, self.legacy)

    def bumped(self, factor_num: int, factor_den: int, cap_fee: int, cap_tip: int) -> FeeQuote:
        """Replacement fees: both fee fields × factor (ceil), at least +1 wei, under the caps."""
        tip = max(-(-self.max_priority_fee_per_gas * factor_num // factor_den), self.max_priority_fee_per_gas + 1)
        fee = max(-(-self.max_fee_per_gas * factor_num // factor_den), self.max_fee_per_gas + 1)
        tip = min(tip, cap_tip)
        fee = min(fee, cap_fee)
        tip = min(tip, fee)
        return FeeQuote(fee, tip, min(fee, self.next_base_fee + tip), self.next_base_fee, self.legacy)


class FeePolicy:
    def __init__(self, cfg: GasConfig) -> None:
        self.cfg = cfg
        self.cap_fee = to_units(cfg.max_fee_per_gas_gwei, 9)
        self.cap_tip = to_units(cfg.max_priority_fee_gwei, 9)
        self.tip = to_units(cfg.priority_fee_gwei, 9)
        mult = cfg.base_fee_multiplier
        self._mult = (int(mult * 1000), 1000)
        gm = cfg.gas_limit_multiplier
        self._gas_mult = (int(gm * 1000), 1000)

    def quote(self, base_fee: int | None, gas_used: int, gas_limit: int, gas_price: int | None = None) -> FeeQuote:
        """Fees for inclusion in the next block after the given head. Raises FeeCapExceeded."""
        if base_fee is None:  # legacy chain
            price = gas_price or 0
            if price > self.cap_fee:
                raise FeeCapExceeded(f"gas price {price / GWEI:.3f} gwei > cap {self.cap_fee / GWEI:.3f} gwei")
            return FeeQuote(price, 0, price, 0, legacy=True)
        nxt = next_base_fee(base_fee, gas_used, gas_limit)
        tip = min(self.tip, self.cap_tip)
        if nxt + tip > self.cap_fee:
            raise FeeCapExceeded(
                f"next base fee {nxt / GWEI:.3f} gwei + tip {tip / GWEI:.3f} gwei > cap {self.cap_fee / GWEI:.3f} gwei"
            )
        max_fee = min(self.cap_fee, nxt * self._mult[0] // self._mult[1] + tip)
        return FeeQuote(max_fee, tip, nxt + tip, nxt)

    @property
    def max_gas_limit(self) -> int:
        return self.cfg.max_gas_limit

    def gas_limit(self, estimate: int) -> int:
        """Padded gas limit for a simulated estimate: estimate × gas_limit_multiplier + gas_limit_extra.

        Never clipped: a limit below the padded estimate could run out of gas by construction. The
        execution policy skips (`gas_limit_exceeded`) when this is above `max_gas_limit`."""
        return estimate * self._gas_mult[0] // self._gas_mult[1] + self.cfg.gas_limit_extra

    def fits(self, gas_limit: int) -> bool:
        """Is `gas_limit` within the operator's max_gas_limit?"""
        return gas_limit <= self.cfg.max_gas_limit

    def bump(self, fees: FeeQuote, cfg_bump: Decimal) -> FeeQuote:
        num = int(cfg_bump * 1000)
        return fees.bumped(num, 1000, self.cap_fee, self.cap_tip)
