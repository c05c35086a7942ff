"""Prometheus metrics (prometheus-client), one registry per daemon so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.positions = Gauge("keeper_positions", "Indexed positions by protocol and status", ["protocol", "status"], registry=r)
        self.markets = Gauge("keeper_markets", "Markets watched", ["protocol"], registry=r)
        self.liquidations = Counter(
            "keeper_liquidations_total",
            "Liquidation transactions by result (sent, landed, reverted, raced, dropped, cancelled)",
            ["protocol", "result"],
            registry=r,
        )
        self.skips = Counter(
            "keeper_liquidations_skipped_total", "Liquidations not sent, by reason", ["protocol", "reason"], registry=r
        )
        self.reward = Counter("keeper_realised_reward_total", "Realised reward in quote-token units", ["protocol"], registry=r)
        self.gas_spent = Counter("keeper_gas_spent_wei_total", "Gas paid by the keeper (wei)", registry=r)
        self.eval_seconds = Histogram(
            "keeper_block_evaluation_seconds",
            "Time to process one block (index, refresh, evaluate, decide)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.head_to_broadcast = Histogram(
            "keeper_head_to_broadcast_seconds",
            "New head seen → last raw transaction of that head accepted by the node",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.head = Gauge("keeper_head_block", "Latest block processed", registry=r)
        self.head_lag = Gauge("keeper_head_lag_seconds", "Wall-clock seconds since the latest block's timestamp", registry=r)
        self.head_age = Gauge("keeper_head_age_seconds", "Seconds since the keeper last saw a new block", registry=r)
        self.rpc_errors = Counter("keeper_rpc_errors_total", "RPC errors by endpoint and kind", ["endpoint", "kind"], registry=r)
        self.rpc_calls = Gauge("keeper_rpc_calls_last_block", "JSON-RPC calls made while processing the last block", registry=r)
        self.balance = Gauge("keeper_balance_wei", "Keeper's native balance (wei)", registry=r)
        self.pending = Gauge("keeper_pending_transactions", "Transactions sent and not yet settled", registry=r)
        self.reorgs = Counter("keeper_reorgs_total", "Chain reorganisations detected", registry=r)
        self.ratio_discrepancies = Counter(
            "keeper_ratio_discrepancies_total",
            "Candidates whose on-chain ratio, kind or reward differs from the local maths",
            ["protocol"],
            registry=r,
        )
        self.up = Gauge("keeper_healthy", "1 when every health check passes", registry=r)
        # insurance-fund monitor and ADL ranking (keeper/monitors/insurance.py, docs/PROTOCOLS.md §I)
        fund = ["protocol", "token"]
        self.insurance_balance = Gauge("keeper_insurance_fund_balance", "InsuranceFund quote balance", fund, registry=r)
        self.insurance_peak = Gauge("keeper_insurance_fund_peak", "Highest fund balance in the rolling window", fund, registry=r)
        self.insurance_drawdown = Gauge(
            "keeper_insurance_fund_drawdown_ratio", "(peak − balance)/peak over the rolling window (0.3 = 30 %)", fund, registry=r
        )
        self.insurance_alert = Gauge("keeper_insurance_fund_alert", "1 while the drawdown alert is active", fund, registry=r)
        self.adl_score = Gauge(
            "keeper_adl_score",
            "ADL score of the top positions (PnL % × leverage, or ÷ when losing); rank 1 = first in its market and side",
            ["protocol", "market", "side", "rank", "account"],
            registry=r,
        )
        self.watch_usage = Gauge(
            "keeper_watch_risk_usage",
            "Watched position's risk usage (1 = the liquidation threshold; README Watchlist)",
            ["protocol", "market", "account"],
            registry=r,
        )
        self.watch_health = Gauge(
            "keeper_watch_health",
            "Watched LLAMMA loan's full health (0 = liquidatable)",
            ["protocol", "market", "account"],
            registry=r,
        )
        self.watch_alerts = Counter("keeper_watch_alerts_total", "Watchlist alerts and clears by event", ["event"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
