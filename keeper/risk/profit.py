"""Profitability policy (pure). All amounts in the value token with 18 decimals unless noted."""

from __future__ import annotations

from dataclasses import dataclass

WAD = 10**18


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gas_cost_in_quote(gas: int, fee_per_gas_wei: int, native_price: int) -> int:
    """Gas cost in quote-token 1e18 units, rounded up (cost is never under-estimated).

    native_price: quote-token units (1e18) per 1 native token (1e18 wei).
    """
    return ceil_div(gas * fee_per_gas_wei * native_price, WAD)


def cost_in_quote(gas: int, fee_per_gas_wei: int, native_price: int, l1_fee_wei: int = 0) -> int:
    """A transaction's whole cost in quote-token 1e18 units, rounded up once: (gas × fee per gas + the
    fixed L1 data fee in wei, keeper/l2.py) × native_price / 1e18. With l1_fee_wei = 0 it is
    gas_cost_in_quote. On Arbitrum the L1 part is gas (in `gas`), not a fixed fee."""
    return ceil_div((gas * fee_per_gas_wei + l1_fee_wei) * native_price, WAD)


@dataclass(frozen=True)
class ProfitDecision:
    send: bool
    reason: str  # "profitable" | "below_min_profit" | "opted_in_unprofitable"
    reward: int
    cost: int
    profit: int
    min_profit: int


def decide(reward: int, cost: int, min_profit: int, allow_unprofitable: bool = False) -> ProfitDecision:
    """Send iff reward − cost ≥ min_profit, or the operator opted in to unprofitable sends."""
    profit = reward - cost
    if profit >= min_profit:
        return ProfitDecision(True, "profitable", reward, cost, profit, min_profit)
    if allow_unprofitable:
        return ProfitDecision(True, "opted_in_unprofitable", reward, cost, profit, min_profit)
    return ProfitDecision(False, "below_min_profit", reward, cost, profit, min_profit)
