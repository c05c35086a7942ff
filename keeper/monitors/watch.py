"""The watchlist ([watch], README "Watchlist"): per watched position, a webhook alert (kind "watch") once
per upward crossing of a risk-usage level and a clear when it drops back, LLAMMA event alerts, and
Prometheus gauges. It only looks: it never confirms, simulates or sends.

Risk usage (1e18 = 100 % = the liquidation threshold, > 100 % exactly when liquidatable) is each adapter's
`risk_usage` — required ÷ available, as the MMR of a margin account (the 80–90 % alert levels traders
set): perp, maintenance ÷ effective margin ratio; LLAMMA, 1/(1 + health(user, True)), i.e. debt ÷ what
the bands are worth at the liquidation discount (docs/PROTOCOLS.md §A, §B.3).

Hysteresis (`Levels`): a level alerts once when the value reaches it; the state clears only once the
value drops below the lowest crossed level − `hysteresis`, so a value wobbling around a level alerts once.
The per-block evaluation skips the ratios of clearly healthy perp positions and LLAMMA health of loans
that are not liquidatable: watched positions are re-evaluated in full (`Adapter.evaluate_positions`).
State is in memory: after a restart a position already past a level alerts again at the first block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keeper.units import WAD, fmt_ratio, to_units

if TYPE_CHECKING:
    from keeper.adapters.base import Adapter
    from keeper.alerts import Alerter
    from keeper.config import WatchConfig
    from keeper.metrics import Metrics
    from keeper.types import Block, Evaluation, PositionKey


@dataclass(frozen=True)
class Transition:
    crossed: bool  # True: a level was reached (alert); False: every level cleared
    level: int  # the highest level reached, or the lowest one cleared (same scale as the values)


class Levels:
    """Hysteresis over ascending levels. The state is the highest level reached (−1: none).
    Up: the value reaches a level above the state → one `crossed` transition naming the highest level
    reached (a jump over several levels is one alert). Down: the state falls to the highest level L with
    value ≥ L − hysteresis; falling below every level is one `cleared` transition (falling to a lower,
    still-crossed level is silent, so rising past the higher level again alerts again)."""

    def __init__(self, levels: list[int], hysteresis: int) -> None:
        if sorted(set(levels)) != list(levels):
            raise ValueError("levels must be strictly increasing")
        self.levels = list(levels)
        self.hysteresis = hysteresis
        self.state = -1

    @property
    def active(self) -> bool:
        return self.state >= 0

    @property
    def crossed(self) -> list[int]:
        return self.levels[: self.state + 1]

    def update(self, value: int) -> Transition | None:
        reached = max((i for i, lv in enumerate(self.levels) if value >= lv), default=-1)
        if reached > self.state:
            self.state = reached
            return Transition(True, self.levels[reached])
        if self.state < 0:
            return None
        held = max((i for i, lv in enumerate(self.levels[: self.state + 1]) if value >= lv - self.hysteresis), default=-1)
        if held >= 0:
            self.state = held
            return None
        self.state = -1
        return Transition(False, self.levels[0])


# check name → (alert event when crossed, when cleared)
EVENTS = {
    "risk_usage": ("risk_usage_crossed", "risk_usage_cleared"),
    "soft_liquidation": ("soft_liquidation_entered", "soft_liquidation_left"),
    "converted_share": ("converted_share_crossed", "converted_share_cleared"),
    "health_below": ("health_below", "health_recovered"),
}


@dataclass
class WatchRow:
    """One watched position as the watchlist sees it (a `keeper watch` row)."""

    protocol: str
    kind: str
    market: str
    market_address: str
    account: str
    status: str
    usage: int | None
    health: int | None = None
    soft: bool | None = None
    converted: int | None = None
    active: dict[str, list[int]] = field(default_factory=dict)  # check → levels crossed now
    transitions: list[tuple[str, Transition, int]] = field(default_factory=list)  # (check, transition, value)


class WatchMonitor:
    name = "watch"

    def __init__(self, cfg: WatchConfig, *, alerts: Alerter | None, metrics: Metrics | None, log: Any) -> None:
        self.cfg = cfg
        self.accounts: frozenset[str] | None = None if cfg.accounts == "all" else frozenset(cfg.accounts)
        self.levels = [to_units(t, 18) for t in cfg.thresholds]
        self.hysteresis = to_units(cfg.hysteresis, 18)
        self.alerts = alerts
        self.metrics = metrics
        self.log = log
        self.state: dict[PositionKey, dict[str, Levels]] = {}
        self.rows: dict[PositionKey, WatchRow] = {}
        self._seq = 0

    def watches(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    # ---- per block -----------------------------------------------------------------------------------
    async def observe(self, adapter: Adapter, evals: list[Evaluation], head: Block) -> None:
        keys = [e.key for e in evals if self.watches(e.key.account)]
        full = await adapter.evaluate_positions(keys, head) if keys else []
        seen: set[PositionKey] = set()
        for e in full:
            row = self.assess(adapter, e)
            seen.add(e.key)
            self.rows[e.key] = row
            self._gauges(row)
            for check, t, value in row.transitions:
                self._fire(row, check, t, value, head)
        for k in [k for k in self.state if k.protocol == adapter.name and k not in seen]:
            self._gone(adapter, k, head)

    def assess(self, adapter: Adapter, e: Evaluation) -> WatchRow:
        """Update the position's hysteresis state from a full evaluation; the row says what is active now
        and which transitions happened (a fresh monitor's first assessment is `keeper watch`)."""
        f = e.fields
        row = WatchRow(
            protocol=adapter.name,
            kind=adapter.kind,
            market=adapter.market_label(e.key.market),
            market_address=e.key.market,
            account=e.key.account,
            status=str(e.status),
            usage=adapter.risk_usage(e),
        )
        health, soft, converted = f.get("health_full"), f.get("soft"), f.get("converted")
        row.health = health if isinstance(health, int) and not isinstance(health, bool) else None
        row.soft = soft if isinstance(soft, bool) else None
        row.converted = converted if isinstance(converted, int) and not isinstance(converted, bool) else None
        values: dict[str, tuple[int, list[int], int]] = {}  # check → (value, levels, hysteresis)
        if row.usage is not None and self.levels:
            values["risk_usage"] = (row.usage, self.levels, self.hysteresis)
        if row.soft is not None and self.cfg.soft_liquidation:
            values["soft_liquidation"] = (WAD if row.soft else 0, [WAD], 0)
        if row.converted is not None and self.cfg.converted_share is not None:
            values["converted_share"] = (row.converted, [to_units(self.cfg.converted_share, 18)], self.hysteresis)
        if row.health is not None and self.cfg.health_below is not None:
            # "health ≤ X" as "−health ≥ −X": the same machine, clearing once health > X + hysteresis
            values["health_below"] = (-row.health, [-to_units(self.cfg.health_below, 18)], self.hysteresis)
        states = self.state.setdefault(e.key, {})
        for check, (value, levels, hyst) in values.items():
            lv = states.get(check)
            if lv is None:
                lv = states[check] = Levels(levels, hyst)
            t = lv.update(value)
            if t is not None:
                row.transitions.append((check, t, value))
            if lv.active:
                row.active[check] = lv.crossed
        return row

    # ---- outputs -----------------------------------------------------------------------------------
    def _labels(self, row: WatchRow) -> tuple[str, str, str]:
        return (row.protocol, row.market, row.account)

    def _gauges(self, row: WatchRow) -> None:
        if self.metrics is None:
            return
        if row.usage is not None:
            self.metrics.watch_usage.labels(*self._labels(row)).set(row.usage / WAD)  # display only
        if row.health is not None:
            self.metrics.watch_health.labels(*self._labels(row)).set(row.health / WAD)

    def _fire(self, row: WatchRow, check: str, t: Transition, value: int, head: Block) -> None:
        event = EVENTS[check][0 if t.crossed else 1]
        who = f"{row.protocol} {row.market} {row.account}"
        if check == "risk_usage":
            what = f"risk usage {fmt_ratio(value, 2)} " + (
                f"reached {fmt_ratio(t.level, 2)}" if t.crossed else f"back below {fmt_ratio(t.level - self.hysteresis, 2)}"
            )
        elif check == "soft_liquidation":
            what = "entered soft liquidation" if t.crossed else "left soft liquidation"
        elif check == "converted_share":
            what = (
                f"converted share {fmt_ratio(value, 2)} "
                + ("reached" if t.crossed else "back below")
                + f" {fmt_ratio(t.level, 2)}"
            )
        else:
            what = (
                f"health {fmt_ratio(-value, 2)} " + ("at or below" if t.crossed else "back above") + f" {fmt_ratio(-t.level, 2)}"
            )
        self._send(event, f"{who}: {what}", row, head, value=value if check != "health_below" else -value, threshold=abs(t.level))

    def _send(self, event: str, message: str, row: WatchRow, head: Block, **details: Any) -> None:
        if self.metrics is not None:
            self.metrics.watch_alerts.labels(event).inc()
        self._seq += 1  # every transition is news: never rate-limited away (hysteresis is the de-duplication)
        details.update(
            watch_event=event,
            protocol=row.protocol,
            market=row.market,
            market_address=row.market_address,
            account=row.account,
            usage=row.usage,
            status=row.status,
            block=head.number,
        )
        if self.alerts is not None:
            self.alerts.alert(
                "watch", message, dedupe=f"{row.protocol}:{row.market_address}:{row.account}:{self._seq}", **details
            )
        else:
            self.log.warning("watch_alert", message=message, **details)

    def _gone(self, adapter: Adapter, key: PositionKey, head: Block) -> None:
        """A watched position no longer evaluated (closed or liquidated): its state and gauges go; an active
        alert is cleared."""
        states = self.state.pop(key)
        row = self.rows.pop(key, None)
        if row is not None and self.metrics is not None:
            for g in (self.metrics.watch_usage, self.metrics.watch_health):
                try:
                    g.remove(*self._labels(row))
                except KeyError:
                    pass
        if row is not None and any(s.active for s in states.values()):
            self._send("position_gone", f"{row.protocol} {row.market} {row.account}: position closed", row, head)


def build(cfg: WatchConfig, *, alerts: Alerter | None, metrics: Metrics | None, log: Any) -> WatchMonitor | None:
    """The watchlist monitor when [watch] is enabled and names accounts (or "all")."""
    if not cfg.enabled or not cfg.accounts:
        return None
    return WatchMonitor(cfg, alerts=alerts, metrics=metrics, log=log)
