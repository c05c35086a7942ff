"""Monitors: per-block observers of the evaluated positions that alert and export metrics but never send
(the watchlist, the insurance-fund monitor). The pipeline hands each one every adapter's evaluations
after the local maths; an exception in a monitor is logged and never fails the block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from keeper.adapters.base import Adapter
    from keeper.alerts import Alerter
    from keeper.config import KeeperConfig
    from keeper.metrics import Metrics
    from keeper.rpc import RpcClient
    from keeper.types import Block, Evaluation


class Monitor(Protocol):
    name: str

    async def observe(self, adapter: Adapter, evals: list[Evaluation], head: Block) -> None:
        """Called once per block per adapter, after `evaluate`."""


def build_monitors(
    cfg: KeeperConfig, *, rpc: RpcClient, adapters: list[Adapter], alerts: Alerter | None, metrics: Metrics, log: Any
) -> list[Monitor]:
    """The monitors the configuration asks for (none by default)."""
    monitors: list[Monitor] = []
    from keeper.monitors import watch  # noqa: PLC0415 - the watchlist ([watch])

    watchlist = watch.build(cfg.watch, alerts=alerts, metrics=metrics, log=log)
    if watchlist is not None:
        monitors.append(watchlist)
    if any(getattr(a.config, "insurance_monitor", False) for a in adapters):
        from keeper.monitors.insurance import InsuranceMonitor  # noqa: PLC0415 - perp adapter only when asked

        monitors.append(InsuranceMonitor(alerts=alerts, metrics=metrics, log=log))
    return monitors
