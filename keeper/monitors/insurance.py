"""Insurance-fund monitor and ADL ranking for Perp v1 (docs/PROTOCOLS.md §I). A monitor only: Perp v1
has no auto-deleveraging of its own; the keeper reports what a venue with ADL would act on.

Per perp protocol with `insurance_monitor = true`, every `insurance_every` blocks: one batched call
reads ClearingHouse.insuranceFund() and the fund's balanceOf in each quote token of the watched
markets (usually one). The balance goes into a rolling window (block timestamps, `insurance_window_hours`)
whose peak gives the drawdown; a webhook alert `insurance_fund_drawdown` fires when it reaches
`insurance_trigger` and `insurance_fund_drawdown_cleared` follows once it is back at or below
`insurance_stop`. Gauges: balance, peak, drawdown, alert state, and the ADL score of the top
`adl_metrics_top` positions (bounded cardinality). `adl_rows` is also what `keeper scan --adl` shows.
The window starts when the keeper does: a restart forgets the peak.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from keeper.abi import flat_decoder
from keeper.adapters.perp_v1 import CH, ERC20, PerpV1Adapter
from keeper.multicall import Call, CallFailed
from keeper.risk import insurance as ins
from keeper.risk import perp as pm
from keeper.units import fmt_ratio, fmt_units, to_units

if TYPE_CHECKING:
    from keeper.adapters.base import Adapter
    from keeper.alerts import Alerter
    from keeper.metrics import Metrics
    from keeper.types import Block, Evaluation

WAD = 10**18
ALERT_KIND = "insurance_fund_drawdown"
CLEAR_KIND = "insurance_fund_drawdown_cleared"


# ---- ADL ranking ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdlRow:
    protocol: str
    market: str  # Amm address
    market_label: str
    account: str
    side: str  # "long" | "short"
    pnl: int  # unrealised PnL at the vAMM spot price (getPositionNotionalAndUnrealizedPnl SPOT), 1e18
    margin: int  # getPosition margin, 1e18
    notional: int  # spot position notional, 1e18
    pnl_ratio: int  # pnl/margin (1e18 = +100 %)
    leverage: int  # notional/margin (1e18 = 1x)
    score: int  # §I.2
    rank: int  # 1 = first in line in its market and side


def adl_rows(adapter: PerpV1Adapter) -> list[AdlRow]:
    """Every indexed open position with its ADL score, ranked within its market and side (a venue with
    ADL deleverages the counterparties of a bankrupt position: the other side of the same market).
    Uses the adapter's state of the last sync; positions whose notional cannot be computed or with no
    margin are left out. Rows come per (market, side), by rank."""
    groups: dict[tuple[str, str], list[tuple[str, ins.AdlScore]]] = defaultdict(list)
    for (amm, account), pos in sorted(adapter.positions.items()):
        m, mi = adapter.states.get(amm), adapter.info.get(amm)
        if m is None or mi is None or pos.size == 0:
            continue
        try:
            notional = pm.notional(pos, m, pm.PnlOption.SPOT)
        except pm.AmmMathError:
            continue
        s = ins.adl_score(pm.unrealized_pnl(pos, notional), pos.margin, notional)
        if s is not None:
            groups[(amm, "long" if pos.size > 0 else "short")].append((account, s))
    rows: list[AdlRow] = []
    for (amm, side), items in sorted(groups.items()):
        by_account = dict(items)
        label = adapter.market_label(amm)
        for account, rank, _score in ins.adl_ranking([(a, s.score) for a, s in items]):
            s = by_account[account]
            rows.append(
                AdlRow(
                    adapter.name, amm, label, account, side, s.pnl, s.margin, s.notional, s.pnl_ratio, s.leverage, s.score, rank
                )
            )
    return rows


# JSON units of the fields `keeper scan --adl` adds to each row (1e18 ratios → decimal strings).
ADL_UNITS = {"adl_score": "ratio", "adl_pnl_pct": "ratio", "adl_leverage": "ratio"}


def add_adl_fields(adapters: list[Adapter], rows: list[dict[str, Any]]) -> list[AdlRow]:
    """`keeper scan --adl`: rank the perp adapters' positions and add adl_rank, adl_score, adl_pnl_pct
    (pnl/margin) and adl_leverage to the matching scan rows (None where there is no ranking)."""
    ranked = [r for a in adapters if isinstance(a, PerpV1Adapter) for r in adl_rows(a)]
    by_key: dict[tuple[Any, Any, Any], AdlRow] = {(r.protocol, r.market, r.account): r for r in ranked}
    for row in rows:
        r = by_key.get((row.get("protocol"), row.get("market_address"), row.get("account")))
        row["adl_rank"] = r.rank if r else None
        row["adl_score"] = r.score if r else None
        row["adl_pnl_pct"] = r.pnl_ratio if r else None
        row["adl_leverage"] = r.leverage if r else None
    return ranked


def adl_table(ranked: list[AdlRow]) -> list[str]:
    """The ranking as text, one block per protocol, rank 1 first in each market and side."""
    lines: list[str] = []
    for protocol in sorted({r.protocol for r in ranked}):
        table = [["MARKET", "SIDE", "RANK", "ACCOUNT", "PNL %", "LEVERAGE", "ADL SCORE"]]
        for r in (r for r in ranked if r.protocol == protocol):
            pct, lev, score = fmt_ratio(r.pnl_ratio, 2), fmt_units(r.leverage, 18, 2) + "x", fmt_units(r.score, 18, 6)
            table.append([r.market_label, r.side, str(r.rank), r.account, pct, lev, score])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.append(
            f"\n[{protocol}] ADL ranking (a monitor: Perp v1 has no ADL of its own; profitable: PnL % × leverage, "
            "losing: PnL % ÷ leverage; rank 1 = first in line in its market and side)"
        )
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return lines


# ---- the monitor ------------------------------------------------------------------------------------------


def _to_wad(raw: int, decimals: int) -> int:
    return raw * 10 ** (18 - decimals) if decimals <= 18 else raw // 10 ** (decimals - 18)


@dataclass
class _Watched:
    fund: str | None
    window: int  # s
    trigger: int  # 1e18
    stop: int  # 1e18
    last_block: int = -1
    windows: dict[str, ins.RollingPeak] = field(default_factory=dict)  # quote token → window
    alarms: dict[str, ins.DrawdownAlarm] = field(default_factory=dict)
    adl_labels: set[tuple[str, str, str, str, str]] = field(default_factory=set)


class InsuranceMonitor:
    name = "insurance"

    def __init__(self, *, alerts: Alerter | None, metrics: Metrics, log: Any) -> None:
        self.alerts = alerts
        self.metrics = metrics
        self.log = log
        self.watched: dict[str, _Watched] = {}

    def _watched(self, a: PerpV1Adapter) -> _Watched:
        w = self.watched.get(a.name)
        if w is None:
            cfg = a.cfg
            w = self.watched[a.name] = _Watched(
                fund=a.insurance_fund,
                window=int(cfg.insurance_window_hours * 3600),
                trigger=to_units(cfg.insurance_trigger, 18),
                stop=to_units(cfg.insurance_stop, 18),
            )
        return w

    async def observe(self, adapter: Adapter, evals: list[Evaluation], head: Block) -> None:
        if not isinstance(adapter, PerpV1Adapter) or not adapter.cfg.insurance_monitor:
            return
        w = self._watched(adapter)
        replaced = head.number <= w.last_block  # a reorg (or the same head again): re-sample it
        if not replaced and w.last_block >= 0 and head.number - w.last_block < adapter.cfg.insurance_every:
            return
        await self._sample(adapter, w, head)
        w.last_block = head.number
        if adapter.cfg.adl_metrics_top > 0:
            self._export_adl(adapter, w)

    async def _sample(self, a: PerpV1Adapter, w: _Watched, head: Block) -> None:
        tokens: dict[str, tuple[int, str]] = {}  # quote token → (decimals, symbol)
        for mi in a.info.values():
            tokens.setdefault(mi.quote_token, (mi.quote_decimals, mi.quote_symbol))
        if not tokens:
            return
        ins_fn, bal_fn = CH.fn("insuranceFund"), ERC20.fn("balanceOf")
        fund = w.fund or a.insurance_fund
        if fund is None:  # the adapter has not started
            return
        for _attempt in range(2):  # a second round only when the ClearingHouse points at another fund now
            calls = [Call(a.ch, ins_fn.encode(), flat_decoder(ins_fn))]
            calls += [Call(t, bal_fn.encode(fund), flat_decoder(bal_fn)) for t in tokens]
            res = await a.ctx.calls.run(calls, head.number)
            if isinstance(res[0], CallFailed):
                self.log.warning("insurance_fund_read_failed", protocol=a.name, block=head.number, error=res[0].reason)
                return
            now_fund = to_checksum_address(res[0][0])
            if now_fund == to_checksum_address(fund):
                fund = now_fund
                break
            self.log.warning("insurance_fund_changed", protocol=a.name, previous=fund, insurance_fund=now_fund, block=head.number)
            fund = w.fund = now_fund
            w.windows.clear()
            w.alarms.clear()
        else:
            return
        for (token, (decimals, symbol)), r in zip(tokens.items(), res[1:], strict=True):
            if isinstance(r, CallFailed):
                self.log.warning("insurance_fund_read_failed", protocol=a.name, token=token, block=head.number, error=r.reason)
                continue
            balance = _to_wad(r[0], decimals)
            win = w.windows.setdefault(token, ins.RollingPeak(w.window))
            win.add(head.timestamp, balance, head.number)
            alarm = w.alarms.setdefault(token, ins.DrawdownAlarm(w.trigger, w.stop))
            change = alarm.update(win.peak, win.current)
            dd = win.drawdown
            self.metrics.insurance_balance.labels(a.name, symbol).set(balance / WAD)
            self.metrics.insurance_peak.labels(a.name, symbol).set(win.peak / WAD)
            self.metrics.insurance_drawdown.labels(a.name, symbol).set(dd / WAD)
            self.metrics.insurance_alert.labels(a.name, symbol).set(1 if alarm.active else 0)
            self.log.debug(
                "insurance_fund_sample",
                protocol=a.name,
                token=symbol,
                balance=balance,
                peak=win.peak,
                drawdown=dd,
                block=head.number,
            )
            if change is not None:
                self._alert(a, w, fund, token, symbol, win, change, head)

    def _alert(
        self,
        a: PerpV1Adapter,
        w: _Watched,
        fund: str,
        token: str,
        symbol: str,
        win: ins.RollingPeak,
        change: ins.Transition,
        head: Block,
    ) -> None:
        hours = w.window / 3600
        if change is ins.Transition.TRIGGERED:
            kind = ALERT_KIND
            message = (
                f"{a.name}: insurance fund {symbol} balance {win.current / WAD:,.2f} is {win.drawdown / WAD:.2%} below its "
                f"{hours:g} h peak {win.peak / WAD:,.2f} (trigger {w.trigger / WAD:.2%})"
            )
        else:
            kind = CLEAR_KIND
            message = (
                f"{a.name}: insurance fund {symbol} drawdown back to {win.drawdown / WAD:.2%} of its {hours:g} h peak "
                f"(stop level {w.stop / WAD:.2%})"
            )
        details: dict[str, Any] = {
            "protocol": a.name,
            "state": change.value,
            "insurance_fund": fund,
            "token": token,
            "symbol": symbol,
            "balance": win.current,
            "peak": win.peak,
            "drawdown": win.drawdown,
            "trigger": w.trigger,
            "stop": w.stop,
            "excess_over_trigger": ins.excess_over(win.peak, win.current, w.trigger),
            "window_seconds": w.window,
            "block": head.number,
        }
        if self.alerts is not None:
            self.alerts.alert(kind, message, dedupe=f"{a.name}:{token}", **details)
        else:
            self.log.warning("alert", kind=kind, message=message, **details)

    def _export_adl(self, a: PerpV1Adapter, w: _Watched) -> None:
        """The top `adl_metrics_top` positions by score; series of positions that left the top are removed."""
        rows = sorted(adl_rows(a), key=lambda r: (-r.score, r.account))[: a.cfg.adl_metrics_top]
        labels: set[tuple[str, str, str, str, str]] = set()
        for r in rows:
            lab = (a.name, r.market_label, r.side, str(r.rank), r.account)
            labels.add(lab)
            self.metrics.adl_score.labels(*lab).set(r.score / WAD)
        for lab in w.adl_labels - labels:
            try:
                self.metrics.adl_score.remove(*lab)
            except KeyError:
                pass
        w.adl_labels = labels
