"""Perpetual Protocol v1 / Palmswap v1 adapter (ClearingHouse + vAMM + oracle).

Per block, with calls that grow with markets and candidates, not positions:
1. one eth_getLogs page (PositionChanged / MarginChanged / PositionSettled of the ClearingHouse)
   marks touched positions dirty;
2. one batched read (Multicall3 or JSON-RPC batch) of every market's reserves, oracle price,
   cumulative premium fraction and snapshot count, plus getPosition of the dirty positions;
3. a second batched read only when a market has new reserve snapshots (for the 900 s TWAP);
then every position is evaluated locally with the contract's exact integer maths, and only the
candidates are confirmed on-chain (batched getPosition + getMarginRatio) before simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from pydantic import Field, model_validator

from keeper.abi import abi, flat, flat_decoder
from keeper.adapters.base import Adapter, Liquidation, usage
from keeper.config import Address, Model, ProtocolConfig, Ratio
from keeper.config import NonNegDec as _NonNegDec
from keeper.config import PosDec as _PosDec
from keeper.indexer import EventIndexer
from keeper.multicall import Call, CallFailed
from keeper.probe import PROBE_SENDER, revert_reason
from keeper.risk import perp as pm
from keeper.risk import perp_liq as pl
from keeper.risk.perp_vec import PositionBook, TrackedPositions
from keeper.rpc import RpcClient, RpcError
from keeper.types import Block, Evaluation, Outcome, Plan, PositionKey, Status
from keeper.units import to_units

CH = abi("perp/ClearingHouse")
AMM = abi("perp/Amm")
IF = abi("perp/InsuranceFund")
ERC20 = abi("common/ERC20")

POSITION_CHANGED = CH.event("PositionChanged")
MARGIN_CHANGED = CH.event("MarginChanged")
POSITION_SETTLED = CH.event("PositionSettled")
POSITION_LIQUIDATED = CH.event("PositionLiquidated")
LIQUIDATE_WITH_SLIPPAGE = CH.fn("liquidateWithSlippage")
POSITION_ROUND = 4096  # getPosition reads per round when many positions are dirty (the initial index)
_LIQUIDATE_SELECTORS = frozenset({CH.fn("liquidate").selector, LIQUIDATE_WITH_SLIPPAGE.selector})

SNAPSHOT_FETCH_STEP = 64  # snapshots read per round while filling the TWAP window

# Variant probe: `liquidateWithSlippage(amm, trader, (0))` with an AMM the InsuranceFund does not
# know. v2.3 has the entry point: it reads the (empty) position, then `liquidate` runs `requireAmm`
# and reverts "amm not found". v2.2 has no such function and no fallback: an empty revert.
PROBE_AMM = "0x000000000000000000000000000000000000dEaD"

# The 5 % lockout switch some ClearingHouses have (our reference one does, the upstream ones do
# not): `lockoutRatio(address amm) -> uint256` (1e18 = 100 %, 0 = off). Encoded here on purpose,
# not read from a test ABI: lockout = "auto" probes for it and follows it only where it answers.
LOCKOUT_RATIO_SELECTOR = function_signature_to_4byte_selector("lockoutRatio(address)")


def _lockout_ratio_call(ch: str, amm: str) -> Call:
    def decode(data: bytes) -> tuple[int]:
        if len(data) < 32:  # a fallback that returns nothing is not a switch
            raise ValueError("short answer")
        return (int(abi_decode(["uint256"], data[:32])[0]),)

    return Call(ch, LOCKOUT_RATIO_SELECTOR + abi_encode(["address"], [amm]), decode)


async def detect_variant(rpc: RpcClient, clearing_house: str, insurance_fund: str | None = None) -> tuple[str, str]:
    """('v2.3' | 'v2.2', evidence) by asking the ClearingHouse (through any proxy: eth_call is).

    First probe: an AMM the InsuranceFund does not know (v2.3: "amm not found"). Only when that
    reverts empty and the InsuranceFund lists an AMM, a second probe with a listed AMM and a trader
    without a position (v2.3: "positionSize is 0" or "amm was closed"), for builds whose
    `getPosition` reads the AMM before `requireAmm`. Empty reverts both times: v2.2."""
    amms = [PROBE_AMM]
    tried: list[str] = []
    while amms:
        amm = amms.pop(0)
        reason = await revert_reason(rpc, clearing_house, LIQUIDATE_WITH_SLIPPAGE.encode(amm, PROBE_SENDER, (0,)))
        if reason is None:
            return "v2.3", f"liquidateWithSlippage({amm}) returned"
        if reason:
            return "v2.3", f"liquidateWithSlippage({amm}) reverted {reason!r}"
        tried.append(amm)
        if len(tried) == 1 and insurance_fund:
            f = IF.fn("getAllAmms")
            try:
                listed = flat(f.decode(await rpc.eth_call(insurance_fund, f.encode())))
            except RpcError:
                listed = []
            amms = [to_checksum_address(a) for a in listed[:1]]
    return "v2.2", f"liquidateWithSlippage reverted without data ({', '.join(tried)}): no such entry point"


class PerpMarketPolicy(Model):
    enabled: bool = Field(True, description="Set false to never liquidate in this market.")
    min_profit: _NonNegDec | None = Field(None, description="Overrides min_profit for this market (quote units).")
    lockout: Literal["auto", "on", "off"] | None = Field(None, description="Overrides the protocol's lockout setting.")
    lockout_threshold: Ratio | None = Field(None, description="Overrides lockout_threshold for this market.")


class PerpV1Config(ProtocolConfig):
    kind: Literal["perp_v1"]
    clearing_house: Address = Field(description="ClearingHouse address.")
    markets: list[Address] = Field(
        default_factory=list, description="Amm addresses to watch; empty = every Amm of the InsuranceFund."
    )
    lockout: Literal["auto", "on", "off"] = Field(
        "on",
        description="5 % lockout rule: 'on' never sends while |spot − index|/index ≥ lockout_threshold; 'off' ignores it; "
        "'auto' follows the contract's own per-market switch where a probe finds one (lockoutRatio), else acts as 'on'.",
    )
    lockout_threshold: Ratio = Field(Decimal("0.05"), description="Deviation that triggers the lockout rule (0.05 = 5 %).")
    prefilter_margin: Ratio = Field(
        Decimal("0.02"),
        description="Positions whose spot margin ratio is within this of the maintenance ratio get the full "
        "TWAP/oracle evaluation each block; the rest are clearly healthy.",
    )
    refresh_positions_every: int = Field(1200, ge=1, description="Blocks between full re-reads of every indexed position.")
    rediscover_every: int = Field(600, ge=1, description="Blocks between re-reads of the InsuranceFund's market list.")
    market_overrides: dict[Address, PerpMarketPolicy] = Field(
        default_factory=dict, description="Per-market policy, keyed by Amm address."
    )
    # insurance-fund monitor and ADL ranking (keeper/monitors/insurance.py, docs/PROTOCOLS.md §I)
    insurance_monitor: bool = Field(
        False,
        description="Watch the InsuranceFund's quote balance: drawdown from its rolling-window peak, a webhook alert at "
        "insurance_trigger, cleared at insurance_stop; the ADL ranking in /metrics. A monitor only: Perp v1 has no ADL.",
    )
    insurance_window_hours: _PosDec = Field(Decimal(8), description="Rolling window of the fund's peak balance (hours).")
    insurance_trigger: Ratio = Field(Decimal("0.30"), description="Drawdown from the window's peak that alerts (≥; 0.30 = 30 %).")
    insurance_stop: Ratio = Field(Decimal("0.25"), description="Drawdown at or below which the alert clears (≤ the trigger).")
    insurance_every: int = Field(1, ge=1, description="Blocks between reads of the fund's balance (one batched call).")
    adl_metrics_top: int = Field(20, ge=0, le=1000, description="Positions with the highest ADL score exported to /metrics.")

    @model_validator(mode="after")
    def _insurance_levels(self) -> PerpV1Config:
        if self.insurance_trigger <= 0:
            raise ValueError("insurance_trigger must be > 0")
        if self.insurance_stop > self.insurance_trigger:
            raise ValueError(f"insurance_stop ({self.insurance_stop}) exceeds insurance_trigger ({self.insurance_trigger})")
        if self.insurance_window_hours * 3600 < 1:
            raise ValueError("insurance_window_hours must be at least one second")
        return self


@dataclass(frozen=True)
class PerpCandidate:
    """A liquidatable position as the local maths saw it (Evaluation.payload), compared with the chain in confirm."""

    ratios: pm.Ratios
    liquidation: pm.Liquidation


@dataclass
class MarketInfo:
    amm: str
    label: str
    quote_token: str
    quote_decimals: int
    quote_symbol: str
    onchain_lockout_ratio: int  # the ClearingHouse's own switch (lockoutRatio(amm)), 0 = off or none
    has_lockout_switch: bool  # the ClearingHouse answers lockoutRatio(amm) (re-read every block)
    policy: PerpMarketPolicy


@dataclass
class SnapshotCache:
    items: dict[int, pm.Snapshot]
    length: int = 0


@lru_cache(maxsize=64)
def _wad(ratio: Decimal) -> int:
    """A configured ratio in 1e18 units (cached: the evaluation asks for it per position)."""
    return to_units(ratio, 18)


def _label_from_key(raw: bytes) -> str:
    text = raw.rstrip(b"\0")
    try:
        s = text.decode("ascii")
        return s if s.isprintable() and s else ""
    except UnicodeDecodeError:
        return ""


class PerpV1Adapter(Adapter):
    kind = "perp_v1"
    config_model = PerpV1Config
    typical_gas = 450_000

    def __init__(self, config: PerpV1Config, ctx):
        super().__init__(config, ctx)
        self.cfg: PerpV1Config = config
        self.ch = config.clearing_house
        self.insurance_fund: str | None = None
        self._params: pm.PerpParams | None = None
        self.variant = "unknown"
        self.variant_evidence = ""
        self.info: dict[str, MarketInfo] = {}
        self.states: dict[str, pm.MarketState] = {}
        self.snapshots: dict[str, SnapshotCache] = {}
        self.twap_memos: dict[str, pm.TwapMemo] = {}  # amm → incremental TWAP per position size
        # every change is recorded, so the prefilter's arrays follow it incrementally (see evaluate)
        self.positions: dict[tuple[str, str], pm.Position] = TrackedPositions()
        self.dirty: set[tuple[str, str]] = set()
        self.events = EventIndexer(
            ctx.rpc,
            ctx.store,
            config.name,
            start_block=config.start_block,
            page_size=ctx.config.chain.log_page_size,
            log=self.log,
        )
        self.last_rediscover = -1
        self.last_full_refresh = -1
        self.value_symbol = "quote"

    # ---- start-up ------------------------------------------------------------------------------
    def addresses(self) -> dict[str, str]:
        out = {f"{self.name}.clearing_house": self.ch}
        if self.insurance_fund:
            out[f"{self.name}.insurance_fund"] = self.insurance_fund
        for amm, mi in self.info.items():
            out[f"{self.name}.amm[{mi.label}]"] = amm
        return out

    async def start(self, head: Block) -> None:
        if await self.ctx.rpc.get_code(self.ch) in ("0x", "", None):
            raise RuntimeError(f"{self.name}: no contract code at clearing_house {self.ch}")
        await self._read_params()
        await self._discover(head)
        # Config naming a market this ClearingHouse does not have is a mistake, not a warning.
        unknown = [a for a in self.cfg.market_overrides if a not in self.info]
        if unknown:
            raise RuntimeError(
                f"{self.name}: market_overrides names {', '.join(unknown)}, not a watched market of clearing_house "
                f"{self.ch} (InsuranceFund {self.insurance_fund})"
            )
        for market, account, data, _blk in self.ctx.store.load_positions(self.name):
            self.positions[(market, account)] = pm.Position(
                int(data["size"]), int(data["margin"]), int(data["open_notional"]), int(data["last_cpf"]), int(data["block"])
            )
        self.log.info(
            "perp_started",
            clearing_house=self.ch,
            variant=self.variant,
            variant_evidence=self.variant_evidence,
            markets=len(self.info),
            mmr=self.params.mmr,
            lfr=self.params.lfr,
            plr=self.params.plr,
            keeper_is_backstop=self.params.keeper_is_backstop,
            positions=len(self.positions),
            cursor=self.events.cursor,
        )

    def _param_calls(self) -> list[Call]:
        """Protocol parameters, re-read every block (owners can change them at any time)."""
        names = ["maintenanceMarginRatio", "liquidationFeeRatio", "partialLiquidationRatio"]
        calls = [Call(self.ch, CH.fn(n).encode(), flat_decoder(CH.fn(n))) for n in names]
        bs = CH.fn("backstopLiquidityProviderMap")
        return [*calls, Call(self.ch, bs.encode(self.ctx.keeper), flat_decoder(bs))]

    def _apply_params(self, res: list) -> None:
        for n, r in zip(("maintenanceMarginRatio", "liquidationFeeRatio", "partialLiquidationRatio"), res[:3], strict=True):
            if isinstance(r, CallFailed):
                raise RuntimeError(f"{self.name}: ClearingHouse.{n}() failed: {r.reason}")
        mmr, lfr, plr = res[0][0], res[1][0], res[2][0]
        backstop = bool(res[3][0]) if not isinstance(res[3], CallFailed) else False
        v23 = self.variant == "v2.3"
        params = pm.PerpParams(
            mmr=mmr, lfr=lfr, plr=plr, partial_on_spot_ratio=v23, backstop_rule=v23, keeper_is_backstop=backstop
        )
        if self._params is not None and params != self._params:
            self.log.info("protocol_params_changed", mmr=mmr, lfr=lfr, plr=plr, keeper_is_backstop=backstop)
        self._params = params

    @property
    def params(self) -> pm.PerpParams:
        if self._params is None:
            raise RuntimeError(f"{self.name}: protocol parameters not read yet (start() first)")
        return self._params

    @property
    def _fund(self) -> str:
        if self.insurance_fund is None:
            raise RuntimeError(f"{self.name}: InsuranceFund not read yet (start() first)")
        return self.insurance_fund

    async def _read_params(self) -> None:
        """The InsuranceFund, the variant (by probing, see `detect_variant`) and the parameters."""
        ins = CH.fn("insuranceFund")
        res = await self.ctx.calls.run([*self._param_calls(), Call(self.ch, ins.encode(), flat_decoder(ins))])
        if isinstance(res[4], CallFailed):
            raise RuntimeError(f"{self.name}: ClearingHouse.insuranceFund() failed: {res[4].reason}")
        self.insurance_fund = res[4][0]
        self.variant, self.variant_evidence = await detect_variant(self.ctx.rpc, self.ch, self.insurance_fund)
        self._apply_params(res[:4])

    async def _discover(self, head: Block) -> None:
        if self.cfg.markets:
            amms = list(self.cfg.markets)
        else:
            f = IF.fn("getAllAmms")
            amms = flat(f.decode(await self.ctx.rpc.eth_call(self._fund, f.encode())))
            amms = [to_checksum_address(a) for a in amms]
        new = [a for a in amms if a not in self.info]
        if new:
            calls: list[Call] = []
            for a in new:
                calls += [
                    Call(self._fund, IF.fn("isExistedAmm").encode(a), flat_decoder(IF.fn("isExistedAmm"))),
                    Call(a, AMM.fn("quoteAsset").encode(), flat_decoder(AMM.fn("quoteAsset"))),
                    Call(a, AMM.fn("priceFeedKey").encode(), flat_decoder(AMM.fn("priceFeedKey"))),
                    _lockout_ratio_call(self.ch, a),  # probe: does the ClearingHouse have a lockout switch?
                ]
            res = await self.ctx.calls.run(calls)
            tokens: dict[str, str] = {}
            for i, a in enumerate(new):
                exists, quote, key, lock = res[4 * i : 4 * i + 4]
                if isinstance(exists, CallFailed) or not exists[0]:
                    if a in self.cfg.markets:
                        raise RuntimeError(
                            f"{self.name}: markets lists {a}, not a market of clearing_house {self.ch} "
                            f"(InsuranceFund {self.insurance_fund} does not know it)"
                        )
                    self.log.warning(
                        "market_not_registered",
                        market=a,
                        note="not in the InsuranceFund: the contract would revert 'amm not found'",
                    )
                    continue
                if isinstance(quote, CallFailed):
                    raise RuntimeError(f"{self.name}: Amm {a} quoteAsset() failed: {quote.reason}")
                label = _label_from_key(key[0]) if not isinstance(key, CallFailed) else ""
                tokens[a] = quote[0]
                self.info[a] = MarketInfo(
                    amm=a,
                    label=label or a[:10],
                    quote_token=quote[0],
                    quote_decimals=18,
                    quote_symbol="quote",
                    onchain_lockout_ratio=0 if isinstance(lock, CallFailed) else lock[0],
                    has_lockout_switch=not isinstance(lock, CallFailed),
                    policy=self.cfg.market_overrides.get(a) or PerpMarketPolicy.model_validate({}),
                )
            uniq = sorted(set(tokens.values()))
            tres = await self.ctx.calls.run(
                [Call(t, ERC20.fn("decimals").encode(), flat_decoder(ERC20.fn("decimals"))) for t in uniq]
                + [Call(t, ERC20.fn("symbol").encode(), flat_decoder(ERC20.fn("symbol"))) for t in uniq]
            )
            dec = {t: (r[0] if not isinstance(r, CallFailed) else 18) for t, r in zip(uniq, tres[: len(uniq)], strict=True)}
            sym = {t: (r[0] if not isinstance(r, CallFailed) else "quote") for t, r in zip(uniq, tres[len(uniq) :], strict=True)}
            for a, t in tokens.items():
                self.info[a].quote_decimals = dec[t]
                self.info[a].quote_symbol = sym[t]
            if self.info:
                self.value_symbol = next(iter(self.info.values())).quote_symbol
            for a in new:
                if a in self.info:
                    mi = self.info[a]
                    mode, source, threshold = self._lockout_rule(mi)
                    self.log.info(
                        "market_added",
                        market=mi.label,
                        market_address=a,
                        quote=mi.quote_symbol,
                        lockout=mode,
                        lockout_source=source,
                        lockout_threshold=threshold,
                    )
        for a in list(self.info):
            if a not in amms:
                self.log.info("market_removed", market_address=a)
                del self.info[a]
        self.last_rediscover = head.number

    def markets(self) -> list[str]:
        return list(self.info)

    def market_label(self, market: str) -> str:
        mi = self.info.get(market)
        return mi.label if mi else market

    def position_count(self) -> int:
        return len(self.positions)

    async def check_rows(self) -> list[tuple[str, bool, str]]:
        p = self.params
        return [
            (
                f"{self.name} clearing house",
                True,
                f"{self.variant}, MMR {p.mmr / 1e16:.2f} %, fee {p.lfr / 1e16:.2f} %, "
                f"partial {p.plr / 1e16:.0f} %, {len(self.info)} markets",
            ),
            (
                f"{self.name} backstop LP",
                True,
                "yes: may liquidate into bad debt"
                if p.keeper_is_backstop
                else "no: bad-debt positions are left to a backstop LP",
            ),
        ]

    def scan_columns(self) -> list[tuple[str, str, str]]:
        return [
            ("SIDE", "side", "str"),
            ("SIZE", "size", "amount"),
            ("SPOT MR", "spot_mr", "ratio"),
            ("TWAP MR", "twap_mr", "ratio"),
            ("ORACLE MR", "oracle_mr", "ratio"),
            ("EFF MR", "effective_mr", "ratio"),
            ("LIQ PRICE", "liq_price", "amount"),
            ("FULL LIQ PRICE", "full_liq_price", "amount"),
        ]

    def field_units(self) -> dict[str, str]:
        amounts: tuple[str, ...] = ("margin", "open_notional", "quote", "fee", "bad_debt", "base_closed")
        amounts += ("notional", "liq_price", "full_liq_price")  # what-if notional; liquidation prices (1e18 quote per base)
        return {f: "amount" for f in amounts} | {"margin_ratio": "ratio", "deviation": "ratio"}

    # ---- per block -------------------------------------------------------------------------------
    async def sync(self, head: Block) -> None:
        if self.cfg.markets == [] and head.number - self.last_rediscover >= self.cfg.rediscover_every:
            await self._discover(head)
        await self._index_logs(head)
        if head.number - self.last_full_refresh >= self.cfg.refresh_positions_every:
            self.dirty.update(self.positions)
            self.last_full_refresh = head.number
        await self._refresh(head)

    async def _index_logs(self, head: Block) -> None:
        topics = [[POSITION_CHANGED.topic0, MARGIN_CHANGED.topic0, POSITION_SETTLED.topic0]]
        await self.events.advance(head, self.ch, topics, self._mark_dirty)

    def _mark_dirty(self, logs: list[dict]) -> None:
        for lg in logs:
            t0 = lg["topics"][0]
            if t0 == POSITION_SETTLED.topic0:  # PositionSettled(amm, trader, ...)
                amm, trader = "0x" + lg["topics"][1][-40:], "0x" + lg["topics"][2][-40:]
            else:  # PositionChanged / MarginChanged (trader/sender, amm, ...)
                trader, amm = "0x" + lg["topics"][1][-40:], "0x" + lg["topics"][2][-40:]
            self.dirty.add((to_checksum_address(amm), to_checksum_address(trader)))

    async def _refresh(self, head: Block) -> None:
        amms = list(self.info)
        calls: list[Call] = []
        for a in amms:
            calls += [
                Call(a, AMM.fn("getReserve").encode(), flat_decoder(AMM.fn("getReserve"))),
                Call(a, AMM.fn("getUnderlyingPrice").encode(), flat_decoder(AMM.fn("getUnderlyingPrice"))),
                Call(
                    self.ch,
                    CH.fn("getLatestCumulativePremiumFraction").encode(a),
                    flat_decoder(CH.fn("getLatestCumulativePremiumFraction")),
                ),
                Call(a, AMM.fn("getSnapshotLen").encode(), flat_decoder(AMM.fn("getSnapshotLen"))),
            ]
        # the contract's lockout switch is only followed (and re-read) where lockout = "auto" found one
        switched = [
            a for a in amms if self.info[a].has_lockout_switch and (self.info[a].policy.lockout or self.cfg.lockout) == "auto"
        ]
        calls += [_lockout_ratio_call(self.ch, a) for a in switched]
        calls += self._param_calls()
        dirty = [k for k in self.dirty if k[0] in self.info]
        # Positions are read in rounds (the initial index of 100k positions at once would hold every
        # encoded call, answer and decoded tuple in memory together); the first round rides along with
        # the market reads, so a normal block is still one call.
        dirty, later = dirty[:POSITION_ROUND], dirty[POSITION_ROUND:]
        gp = CH.fn("getPosition")
        calls += [Call(self.ch, gp.encode(a, t), flat_decoder(gp)) for a, t in dirty]
        res = await self.ctx.calls.run(calls, head.number)
        off = 4 * len(amms)
        for a, r in zip(switched, res[off : off + len(switched)], strict=True):
            if not isinstance(r, CallFailed) and r[0] != self.info[a].onchain_lockout_ratio:
                self.log.info("lockout_switch_changed", market_address=a, market=self.info[a].label, ratio=r[0])
                self.info[a].onchain_lockout_ratio = r[0]
        off += len(switched)
        self._apply_params(res[off : off + 4])
        position_results = res[off + 4 :]
        new_lengths: dict[str, tuple[int, int, int, int, int]] = {}
        for i, a in enumerate(amms):
            reserve, price, cpf, length = res[4 * i : 4 * i + 4]
            failed = next((r for r in (reserve, price, cpf, length) if isinstance(r, CallFailed)), None)
            if failed is not None:
                self.log.warning("market_read_failed", market_address=a, error=failed.reason)
                self.states.pop(a, None)
                continue
            new_lengths[a] = (reserve[0], reserve[1], price[0], cpf[0], length[0])
        await self._refresh_snapshots(head, {a: v[4] for a, v in new_lengths.items()})
        for a, (q, b, price, cpf, _n) in new_lengths.items():
            tail = self._twap_tail(a, head.timestamp)
            if tail is None:
                self.states.pop(a, None)
                continue
            memo = self.twap_memos.setdefault(a, pm.TwapMemo())
            self.states[a] = pm.MarketState(q, b, price, cpf, tuple(tail), head.timestamp, twap_memo=memo)
        self._apply_positions(dirty, position_results, head)
        for i in range(0, len(later), POSITION_ROUND):
            chunk = later[i : i + POSITION_ROUND]
            results = await self.ctx.calls.run([Call(self.ch, gp.encode(a, t), flat_decoder(gp)) for a, t in chunk], head.number)
            self._apply_positions(chunk, results, head)

    def _apply_positions(self, keys: list[tuple[str, str]], results: list, head: Block) -> None:
        """getPosition answers into the index (memory and the state file)."""
        upserts, deletes = [], []
        for (a, t), r in zip(keys, results, strict=True):
            if isinstance(r, CallFailed):
                self.log.warning("position_read_failed", market=a, account=t, error=r.reason)
                continue
            size, margin, open_notional, cpf, _lhi, blk = r
            self.dirty.discard((a, t))
            if size == 0:
                if self.positions.pop((a, t), None) is not None:
                    deletes.append((a, t))
                    self.log.debug("position_closed", market=a, account=t)
                continue
            pos = pm.Position(size, margin, open_notional, cpf, blk)
            if self.positions.get((a, t)) != pos:
                self.positions[(a, t)] = pos
                upserts.append(
                    (
                        a,
                        t,
                        {
                            "size": str(size),
                            "margin": str(margin),
                            "open_notional": str(open_notional),
                            "last_cpf": str(cpf),
                            "block": blk,
                        },
                        head.number,
                    )
                )
        self.ctx.store.put_positions(self.name, upserts)
        self.ctx.store.delete_positions(self.name, deletes)

    async def _refresh_snapshots(self, head: Block, lengths: dict[str, int]) -> None:
        """Fetch the reserve snapshots each market's 900 s TWAP needs (only new ones, in rounds)."""
        rs = AMM.fn("reserveSnapshots")
        todo: dict[str, list[int]] = {}
        for a, n in lengths.items():
            cache = self.snapshots.setdefault(a, SnapshotCache({}))
            if n != cache.length:
                # The previous last snapshot may have been overwritten in its block: re-read it.
                cache.items.pop(cache.length - 1, None)
                for i in [i for i in cache.items if i >= n]:
                    del cache.items[i]
                cache.length = n
            todo[a] = self._missing_snapshots(a, head.timestamp)
        while any(todo.values()):
            order = [(a, i) for a, idxs in todo.items() for i in idxs]
            res = await self.ctx.calls.run([Call(a, rs.encode(i), flat_decoder(rs)) for a, i in order], head.number)
            for (a, i), r in zip(order, res, strict=True):
                if isinstance(r, CallFailed):
                    raise RuntimeError(f"{self.name}: reserveSnapshots({i}) of {a} failed: {r.reason}")
                q, b, ts, bn = r
                self.snapshots[a].items[i] = pm.Snapshot(q, b, ts, bn)
            todo = {a: self._missing_snapshots(a, head.timestamp) for a in todo}

    def _missing_snapshots(self, amm: str, now: int) -> list[int]:
        """Snapshot indexes still to read (newest first, one round of at most SNAPSHOT_FETCH_STEP)
        before the cached history reaches back to now − 900 s or to snapshot 0."""
        cache = self.snapshots[amm]
        need: list[int] = []
        i = cache.length - 1
        while i >= 0 and len(need) < SNAPSHOT_FETCH_STEP:
            s = cache.items.get(i)
            if s is None:
                need.append(i)
            elif s.timestamp <= now - pm.TWAP_INTERVAL:
                break
            i -= 1
        return need

    def _twap_tail(self, amm: str, now: int) -> list[pm.Snapshot] | None:
        """The snapshots Amm.getOutputTwap reads at `now`, oldest first; prunes older ones."""
        cache = self.snapshots.get(amm)
        if cache is None or cache.length == 0:
            return None
        tail: list[pm.Snapshot] = []
        i = cache.length - 1
        while i >= 0:
            s = cache.items.get(i)
            if s is None:
                return None
            tail.append(s)
            if s.timestamp <= now - pm.TWAP_INTERVAL:
                break
            i -= 1
        oldest = max(i, 0)
        for j in [j for j in cache.items if j < oldest]:
            del cache.items[j]
        tail.reverse()
        return tail

    # ---- evaluation --------------------------------------------------------------------------
    def _lockout_rule(self, mi: MarketInfo) -> tuple[str, str, int | None]:
        """(mode, where it comes from, deviation threshold 1e18 or None when off) for a market.

        'on' (the default): the configured threshold (5 %). 'off': none. 'auto': the contract's own
        switch (lockoutRatio, 0 = off) where the discovery probe found one, otherwise as 'on'."""
        mode = mi.policy.lockout or self.cfg.lockout
        if mode == "off":
            return "off", "config", None
        if mode == "auto" and mi.has_lockout_switch:
            return "auto", "contract switch", mi.onchain_lockout_ratio or None
        thr = mi.policy.lockout_threshold if mi.policy.lockout_threshold is not None else self.cfg.lockout_threshold
        source = "config" if mode == "on" else "config (auto: the contract has no lockout switch)"
        return mode, source, _wad(thr)

    def _lockout_threshold(self, mi: MarketInfo) -> int | None:
        """Deviation (1e18) at or above which nothing is sent in this market, or None when off."""
        return self._lockout_rule(mi)[2]

    def min_profit_for(self, market: str) -> Decimal | None:
        mi = self.info.get(market)
        if mi and mi.policy.min_profit is not None:
            return mi.policy.min_profit
        return self.cfg.min_profit

    def evaluate(self, head: Block, *, full: bool = False) -> list[Evaluation]:
        """Every position of every market with a state. Per block (full=False) a position whose SPOT
        ratio is ≥ mmr + prefilter_margin is clearly healthy and gets its reused plain Evaluation;
        the vectorised prefilter (risk/perp_vec.py) proves that with float bounds over each market's
        arrays, and only the positions it cannot prove go through the exact integer maths
        (`_evaluate_one`, which makes the same test exactly). The result equals evaluating every
        position exactly. full=True (scan) evaluates every position in full."""
        if full:
            out: list[Evaluation] = []
            for k, pos in self.positions.items():
                m, mi = self.states.get(k[0]), self.info.get(k[0])
                if m is not None and mi is not None:
                    key = PositionKey(self.name, *k)
                    ev = self._evaluate_one(key, pos, m, mi, None) or Evaluation(key, Status.HEALTHY, False)
                    ev.fields.update(self._liquidation_prices(pos, m, mi))  # scan only: never on the per-block path
                    out.append(ev)
            return out
        self.__dict__["_prev_eval"] = self.__dict__.pop("_last_eval", None)
        skip = self.params.mmr + _wad(self.cfg.prefilter_margin)
        book = self._prefilter_book()
        book.sync(self.positions)
        out = []
        layout: list[tuple[str, int]] = []  # (market, positions) in `out`, with the book's layout version
        replaced: list[int] = []  # indexes in `out` not holding the position's reused plain Evaluation
        for amm, arrays in book.markets.items():
            m, mi = self.states.get(amm), self.info.get(amm)
            if m is None or mi is None or arrays.n == 0:
                continue
            # Each position's "clearly healthy" Evaluation (never modified) is reused block after
            # block: the common case allocates nothing per position.
            off = len(out)
            out += arrays.items
            layout.append((amm, arrays.n))
            try:
                unproven = arrays.unproven(m.quote_reserve, m.base_reserve, m.cpf, skip)
                m.deviation  # noqa: B018 - raises where the exact maths would for every position (oracle 0)
            except (ArithmeticError, ValueError):
                unproven = list(range(arrays.n))
            self._evaluate_unproven(out, arrays.positions, unproven, m, mi, skip, off)
            replaced += [off + i for i in unproven if out[off + i] is not arrays.items[i]]
        self.__dict__["_last_eval"] = (out, (book.layout, tuple(layout)), replaced)
        return out

    def evaluation_delta(self, evals: list[Evaluation], prev: list[Evaluation]) -> list[int] | None:
        """Where `evals` differs from `prev` as objects, when both are the last two per-block evaluations
        over the same layout (same markets, same positions in the same order): the indexes either block
        replaced (every other index holds the same reused plain Evaluation in both)."""
        last: tuple | None = self.__dict__.get("_last_eval")
        before: tuple | None = self.__dict__.get("_prev_eval")
        if last is None or before is None or last[0] is not evals or before[0] is not prev or last[1] != before[1]:
            return None
        return sorted(set(last[2]).union(before[2]))

    def _evaluate_each(
        self,
        evals: list[Evaluation],
        positions: list[pm.Position],
        unproven: list[int],
        m: pm.MarketState,
        mi: MarketInfo,
        skip: int | None,
        off: int = 0,
    ) -> None:
        """The reference of `_evaluate_unproven`: `_evaluate_one` position by position."""
        for i in unproven:
            e = self._evaluate_one(evals[off + i].key, positions[i], m, mi, skip)
            if e is not None:
                evals[off + i] = e

    def _evaluate_unproven(
        self,
        evals: list[Evaluation],
        positions: list[pm.Position],
        unproven: list[int],
        m: pm.MarketState,
        mi: MarketInfo,
        skip: int,
        off: int = 0,
    ) -> None:
        """`_evaluate_one(…, skip)` of positions[i] into evals[off + i] (unless clearly healthy) for each i in
        `unproven`: the same integers (pm.ratios with the incremental TWAP), fused into one loop with the
        market's values read once. Anything unusual (a revert of the maths, a market without a TWAP
        memo) goes through `_evaluate_one` itself, which gives the same answer, error reason included."""
        slow = self._evaluate_one
        memo = m.twap_memo
        try:
            deviation = m.deviation
            q, b, kw, cpf = m.quote_reserve, m.base_reserve, m.kw, m.cpf
        except ArithmeticError:
            memo = None
        if memo is None or skip is None:
            self._evaluate_each(evals, positions, unproven, m, mi, skip, off)
            return
        twap = memo.sized
        ovs = deviation >= pm.MAX_ORACLE_SPREAD_RATIO
        oracle = m.oracle_price
        p = self.params
        mmr, wad = p.mmr, pm.WAD
        label, quote_symbol, decimals, enabled = mi.label, mi.quote_symbol, mi.quote_decimals, mi.policy.enabled
        threshold = self._lockout_threshold(mi)
        locked = threshold is not None and deviation >= threshold
        lock_reason = f"price deviation {deviation} ≥ {threshold}" if locked else ""
        healthy, over_spread, partial, full = Status.HEALTHY, Status.OVER_SPREAD, Status.PARTIAL, Status.FULL
        liquidation, token_floor = pm.liquidation, pm.token_floor
        for i in unproven:
            pos, j = positions[i], off + i
            try:
                size, margin, on = pos.size, pos.margin, pos.open_notional
                # spot notional: Amm.getOutputPrice(close dir, |size|) (pm._output inlined)
                if size > 0:
                    long, base = True, size
                    quote_after, rest = divmod(kw, b + size)
                elif size < 0 and b > -size:
                    long, base = False, -size
                    quote_after, rest = divmod(kw, b + size)
                else:
                    raise ArithmeticError  # no position, or the contract's revert: the reference path
                spot_n = quote_after - q if quote_after > q else q - quote_after
                if rest:
                    if long:
                        if spot_n == 0:
                            raise ArithmeticError
                        spot_n -= 1
                    else:
                        spot_n += 1
                spot_pnl = spot_n - on if long else on - spot_n
                x = (cpf - pos.last_cpf) * size  # funding payment, truncated toward zero
                fp = x // wad if x >= 0 else -(-x // wad)
                x = (margin + spot_pnl - fp) * wad
                spot_mr = x // spot_n if x >= 0 else -(-x // spot_n)  # ZeroDivisionError: the reference path
                if spot_mr >= skip:
                    continue  # clearly healthy: the reused plain Evaluation stays
                twap_n = twap(long, base, m)
                twap_pnl = twap_n - on if long else on - twap_n
                x = (margin + twap_pnl - fp) * wad
                twap_mr = x // twap_n if x >= 0 else -(-x // twap_n)
                contract_mr = spot_mr if spot_pnl > twap_pnl else twap_mr  # strict >: ties take the TWAP pair
                effective, oracle_mr = contract_mr, None
                if ovs:
                    oracle_n = base * oracle // wad
                    x = (margin + (oracle_n - on if long else on - oracle_n) - fp) * wad
                    oracle_mr = x // oracle_n if x >= 0 else -(-x // oracle_n)
                    if oracle_mr - contract_mr > 0:
                        effective = oracle_mr
            except ArithmeticError:
                e = slow(evals[j].key, pos, m, mi, skip)
                if e is not None:
                    evals[j] = e
                continue
            fields: dict[str, object] = {
                "market": label,
                "side": "long" if long else "short",
                "size": size,
                "margin": margin,
                "open_notional": on,
                "quote_symbol": quote_symbol,
                "spot_mr": spot_mr,
                "twap_mr": twap_mr,
                "oracle_mr": oracle_mr,
                "margin_ratio": contract_mr,
                "effective_mr": effective,
                "over_spread": ovs,
                "deviation": deviation,
            }
            if not effective - mmr < 0:  # not liquidatable (pm.liquidation's own test)
                evals[j] = Evaluation(evals[j].key, over_spread if ovs and contract_mr < mmr else healthy, False, None, fields)
                continue
            # liquidatable: the reward and the rules as _evaluation (the market's rules read once)
            r = pm.Ratios(spot_n, spot_pnl, spot_mr, twap_n, twap_pnl, twap_mr, contract_mr, oracle_mr, effective, ovs)
            liq = liquidation(pos, m, p, r)
            reward = token_floor(liq.fee_to_liquidator, decimals)
            fields["kind"] = "partial" if liq.partial else "full"
            fields["quote"] = liq.quote
            fields["fee"] = liq.fee_to_liquidator
            fields["bad_debt"] = liq.bad_debt
            fields["base_closed"] = liq.base_closed
            kind = partial if liq.partial else full
            key = evals[j].key
            if locked:
                evals[j] = Evaluation(key, Status.LOCKOUT, False, reward, fields, reason=lock_reason)
            elif not enabled:
                evals[j] = Evaluation(key, kind, False, reward, fields, reason="market disabled by policy")
            elif liq.needs_backstop:
                evals[j] = Evaluation(
                    key, Status.BAD_DEBT, False, reward, fields, reason="bad debt: only a backstop LP may liquidate"
                )
            else:
                evals[j] = Evaluation(key, kind, True, reward, fields, payload=PerpCandidate(r, liq))

    def _prefilter_book(self) -> PositionBook[tuple[str, str], Evaluation]:
        """The prefilter's arrays (made on first use: adapters built without __init__ in tests have none)."""
        book: PositionBook[tuple[str, str], Evaluation] | None = self.__dict__.get("_book")
        if book is None:
            name = self.name
            book = PositionBook(lambda k: k[0], lambda k: Evaluation(PositionKey(name, k[0], k[1]), Status.HEALTHY, False))
            self.__dict__["_book"] = book
        return book

    @staticmethod
    def _position_fields(pos: pm.Position, mi: MarketInfo) -> dict:
        return {
            "market": mi.label,
            "side": "long" if pos.size > 0 else "short",
            "size": pos.size,
            "margin": pos.margin,
            "open_notional": pos.open_notional,
            "quote_symbol": mi.quote_symbol,
        }

    def _evaluate_one(
        self, key: PositionKey, pos: pm.Position, m: pm.MarketState, mi: MarketInfo, skip: int | None
    ) -> Evaluation | None:
        """None when the position is clearly healthy (spot ratio ≥ `skip`; per-block prefilter only)."""
        try:
            r = pm.ratios(pos, m, skip_twap_above=skip)
        except pm.AmmMathError as exc:
            return Evaluation(key, Status.HEALTHY, False, None, self._position_fields(pos, mi), reason=f"maths: {exc}")
        if r is None:
            return None
        return self._evaluation(key, pos, m, mi, r)

    def _evaluation(self, key: PositionKey, pos: pm.Position, m: pm.MarketState, mi: MarketInfo, r: pm.Ratios) -> Evaluation:
        """The position's Evaluation from its ratios: status, the rules (lockout, policy, backstop), reward."""
        p = self.params
        deviation = m.deviation  # pm.price_deviation(m)
        fields: dict[str, object] = {  # _position_fields and the ratios in one literal (runs per position near maintenance)
            "market": mi.label,
            "side": "long" if pos.size > 0 else "short",
            "size": pos.size,
            "margin": pos.margin,
            "open_notional": pos.open_notional,
            "quote_symbol": mi.quote_symbol,
            "spot_mr": r.spot_mr,
            "twap_mr": r.twap_mr,
            "oracle_mr": r.oracle_mr,
            "margin_ratio": r.contract_mr,
            "effective_mr": r.effective_mr,
            "over_spread": r.over_spread,
            "deviation": deviation,
        }
        if not r.effective_mr - p.mmr < 0:  # not liquidatable (pm.liquidation's own test)
            status = Status.OVER_SPREAD if r.over_spread and r.contract_mr < p.mmr else Status.HEALTHY
            return Evaluation(key, status, False, None, fields)
        liq = pm.liquidation(pos, m, p, r)
        reward = pm.token_floor(liq.fee_to_liquidator, mi.quote_decimals)
        fields.update(
            kind="partial" if liq.partial else "full",
            quote=liq.quote,
            fee=liq.fee_to_liquidator,
            bad_debt=liq.bad_debt,
            base_closed=liq.base_closed,
        )
        kind = Status.PARTIAL if liq.partial else Status.FULL
        threshold = self._lockout_threshold(mi)
        if threshold is not None and deviation >= threshold:
            return Evaluation(key, Status.LOCKOUT, False, reward, fields, reason=f"price deviation {deviation} ≥ {threshold}")
        if not mi.policy.enabled:
            return Evaluation(key, kind, False, reward, fields, reason="market disabled by policy")
        if liq.needs_backstop:
            return Evaluation(key, Status.BAD_DEBT, False, reward, fields, reason="bad debt: only a backstop LP may liquidate")
        return Evaluation(key, kind, True, reward, fields, payload=PerpCandidate(r, liq))

    # ---- confirmation and plans ------------------------------------------------------------------
    async def confirm(self, candidates: list[Evaluation], head: Block) -> list[Plan]:
        """Re-check candidates on-chain; the chain decides. Per candidate: getPosition,
        getMarginRatio and the SPOT / ORACLE notional and PnL; per market: isOverSpreadLimit, the
        CPF and the spot and index prices (one batch); then, for partial closes, the quote of the
        reverse trade (a second batch). Kind and expected reward come from these reads, the policy
        checks (lockout, backstop) too; where they differ from the local evaluation the difference
        is logged and counted (keeper_ratio_discrepancies_total), and where they cannot be derived
        the candidate is skipped with the reason logged."""
        if not candidates:
            return []
        gp, gmr, gpn = CH.fn("getPosition"), CH.fn("getMarginRatio"), CH.fn("getPositionNotionalAndUnrealizedPnl")
        cpf_fn = CH.fn("getLatestCumulativePremiumFraction")
        markets = sorted({e.key.market for e in candidates})
        calls: list[Call] = []
        for a in markets:
            calls += [
                Call(a, AMM.fn("isOverSpreadLimit").encode(), flat_decoder(AMM.fn("isOverSpreadLimit"))),
                Call(self.ch, cpf_fn.encode(a), flat_decoder(cpf_fn)),
                Call(a, AMM.fn("getSpotPrice").encode(), flat_decoder(AMM.fn("getSpotPrice"))),
                Call(a, AMM.fn("getUnderlyingPrice").encode(), flat_decoder(AMM.fn("getUnderlyingPrice"))),
            ]
        for e in candidates:
            m, t = e.key.market, e.key.account
            calls += [
                Call(self.ch, gp.encode(m, t), flat_decoder(gp)),
                Call(self.ch, gmr.encode(m, t), flat_decoder(gmr)),
                Call(self.ch, gpn.encode(m, t, int(pm.PnlOption.SPOT)), flat_decoder(gpn)),
                Call(self.ch, gpn.encode(m, t, int(pm.PnlOption.ORACLE)), flat_decoder(gpn)),
            ]
        res = await self.ctx.calls.run(calls, head.number)
        market_reads = {a: res[4 * i : 4 * i + 4] for i, a in enumerate(markets)}
        off = 4 * len(markets)
        decided: list[tuple[Evaluation, pm.ChainReads, pm.ChainDecision]] = []
        for i, e in enumerate(candidates):
            k = (e.key.market, e.key.account)
            posr, mrr, spot, oracle = res[off + 4 * i : off + 4 * i + 4]
            ovs, cpf, sp, idx = market_reads[e.key.market]
            failed = next((r for r in (posr, mrr, spot, ovs, cpf, sp, idx) if isinstance(r, CallFailed)), None)
            if failed is not None:
                self._drop(e, f"on-chain reads failed: {failed.reason}")
                if "positionSize is 0" in failed.reason:
                    self.positions.pop(k, None)
                    self.ctx.store.delete_positions(self.name, [k])
                continue
            size, margin, open_notional, last_cpf, _lhi, blk = posr
            onchain = pm.Position(size, margin, open_notional, last_cpf, blk)
            if onchain != self.positions.get(k):  # the index was behind: evaluate the chain's position locally
                self.positions[k] = onchain
                self.dirty.add(k)
                mi = self.info.get(e.key.market)
                state = self.states.get(e.key.market)
                if mi is not None and state is not None:
                    e = self._evaluate_one(e.key, onchain, state, mi, None) or e
            reads = pm.ChainReads(
                position=onchain,
                margin_ratio=mrr[0],
                spot_notional=spot[0],
                spot_pnl=spot[1],
                oracle_notional=None if isinstance(oracle, CallFailed) else oracle[0],
                oracle_pnl=None if isinstance(oracle, CallFailed) else oracle[1],
                over_spread=bool(ovs[0]),
                cpf=cpf[0],
                spot_price=sp[0],
                index_price=idx[0],
            )
            try:
                d = pm.chain_decision(reads, self.params)
            except pm.AmmMathError as exc:
                self._drop(e, f"kind and reward cannot be derived from the on-chain reads: {exc}")
                continue
            decided.append((e, reads, d))
        # the quote of each partial close: Amm.getOutputPrice(close dir, |size·plr|) on the same block
        gop = AMM.fn("getOutputPrice")
        partial = [(e, r, d) for e, r, d in decided if d.partial]
        quotes = await self.ctx.calls.run(
            [
                Call(e.key.market, gop.encode(int(r.position.close_dir), (d.base_closed,)), flat_decoder(gop))
                for e, r, d in partial
            ],
            head.number,
        )
        quote_of = {e.key: q for (e, _r, _d), q in zip(partial, quotes, strict=True)}
        plans: list[Plan] = []
        for e, reads, d in decided:
            q = quote_of.get(e.key)
            if isinstance(q, CallFailed):
                self._drop(e, f"kind and reward cannot be derived: getOutputPrice failed: {q.reason}")
                continue
            liq = pm.chain_liquidation(reads, self.params, d, q[0] if q is not None else None)
            mi = self.info[e.key.market]
            reward = pm.token_floor(liq.fee_to_liquidator, mi.quote_decimals) if liq.liquidatable else 0
            kind = ("partial" if liq.partial else "full") if liq.liquidatable else "none"
            self._compare(e, reads, d, kind, reward)
            if not liq.liquidatable:
                self._drop(e, f"not liquidatable on-chain: margin ratio {d.effective_mr} ≥ maintenance {self.params.mmr}")
                continue
            threshold = self._lockout_threshold(mi)
            if threshold is not None and d.deviation >= threshold:
                self._drop(e, f"lockout on-chain: price deviation {d.deviation} ≥ {threshold}")
                continue
            if liq.needs_backstop:
                self._drop(e, "bad debt on-chain: only a backstop LP may liquidate")
                continue
            fields = {
                **e.fields,
                "margin_ratio": reads.margin_ratio,
                "spot_mr": d.spot_mr,
                "oracle_mr": d.oracle_mr,
                "effective_mr": d.effective_mr,
                "over_spread": reads.over_spread,
                "deviation": d.deviation,
                "kind": kind,
                "quote": liq.quote,
                "fee": liq.fee_to_liquidator,
                "bad_debt": liq.bad_debt,
                "base_closed": liq.base_closed,
            }
            plans.append(
                Plan(
                    key=e.key,
                    to=self.ch,
                    data=CH.fn("liquidate").encode(e.key.market, e.key.account),
                    kind=kind,
                    expected_reward=reward,
                    fields=fields,
                    typical_gas=self.typical_gas,
                )
            )
        return plans

    def _drop(self, e: Evaluation, reason: str) -> None:
        self.log.info("candidate_dropped", account=e.key.account, market=e.key.market, reason=reason)

    def _compare(self, e: Evaluation, reads: pm.ChainReads, d: pm.ChainDecision, kind: str, reward: int) -> None:
        """Log and count where the local evaluation disagrees with the chain (the chain wins)."""
        c = e.payload
        if not isinstance(c, PerpCandidate):  # every candidate evaluate() makes carries one
            return
        local: dict[str, object] = {
            "margin_ratio": c.ratios.contract_mr,
            "kind": "partial" if c.liquidation.partial else "full",
            "reward": e.est_reward or 0,
        }
        chain: dict[str, object] = {"margin_ratio": reads.margin_ratio, "kind": kind, "reward": reward}
        if reads.over_spread:
            local["oracle_mr"], chain["oracle_mr"] = c.ratios.oracle_mr, d.oracle_mr
        differs = sorted(n for n in chain if local[n] != chain[n])
        if not differs:
            return
        self.log.warning(
            "onchain_local_mismatch",
            account=e.key.account,
            market=e.key.market,
            differs=differs,
            **{f"local_{n}": local[n] for n in chain},
            **{f"onchain_{n}": chain[n] for n in chain},
            note="the on-chain values decide",
        )
        if self.ctx.metrics is not None:
            self.ctx.metrics.ratio_discrepancies.labels(self.name).inc()

    def outcome(self, plan: Plan, receipt: dict) -> Outcome:
        tx_hash = receipt["transactionHash"]
        gas_used = int(receipt["gasUsed"], 16)
        cost = gas_used * int(receipt.get("effectiveGasPrice", "0x0"), 16)
        if int(receipt["status"], 16) != 1:
            return Outcome(plan.key, tx_hash, "reverted", plan.kind, 0, gas_used, cost)
        mi = self.info.get(plan.key.market)
        decimals = mi.quote_decimals if mi else 18
        fee, kind, fields = 0, plan.kind, dict[str, int]()
        for lg in receipt.get("logs", []):
            if lg["address"].lower() != self.ch.lower() or not lg["topics"]:
                continue
            if lg["topics"][0] == POSITION_LIQUIDATED.topic0:
                ev = POSITION_LIQUIDATED.decode(lg)
                if ev["trader"] == plan.key.account and ev["amm"] == plan.key.market and ev["liquidator"] == self.ctx.keeper:
                    fee += ev["liquidationFee"]
                    fields.update(notional=ev["positionNotional"], size=ev["positionSize"], bad_debt=ev["badDebt"])
            elif lg["topics"][0] == POSITION_CHANGED.topic0:
                ev = POSITION_CHANGED.decode(lg)
                if ev["trader"] == plan.key.account and ev["amm"] == plan.key.market:
                    kind = "partial" if ev["positionSizeAfter"] != 0 else "full"
        # The position changed: re-read it next block.
        self.dirty.add((plan.key.market, plan.key.account))
        return Outcome(plan.key, tx_hash, "landed", kind, pm.token_floor(fee, decimals), gas_used, cost, fields)

    async def explain_failure(self, plan: Plan, receipt: dict | None, since_block: int) -> tuple[str, str]:
        """('raced', who) if another account liquidated this position meanwhile, else ('reverted', reason)."""
        self.dirty.add((plan.key.market, plan.key.account))
        to_block = int(receipt["blockNumber"], 16) if receipt else None
        if to_block is None:
            to_block = await self.ctx.rpc.block_number()
        topics = [
            POSITION_LIQUIDATED.topic0,
            "0x" + "0" * 24 + plan.key.account[2:].lower(),
            "0x" + "0" * 24 + plan.key.market[2:].lower(),
        ]
        logs = await self.ctx.rpc.get_logs(self.ch, topics, since_block, to_block)
        others = [POSITION_LIQUIDATED.decode(lg)["liquidator"] for lg in logs]
        others = [o for o in others if o != self.ctx.keeper]
        if others:
            return "raced", f"liquidated first by {others[0]}"
        reason = ""
        try:
            await self.ctx.rpc.eth_call(plan.to, plan.data, sender=self.ctx.keeper, block=to_block)
        except RpcError as exc:
            reason = getattr(exc, "reason", "") or exc.message
        return "reverted", reason or "reverted (passes now)"

    def risk_usage(self, e: Evaluation) -> int | None:
        """Maintenance ÷ effective margin ratio (docs/PROTOCOLS.md §A: liquidatable iff ratio < MMR, so
        exactly when this is > 100 %); a ratio ≤ 0 (no margin left) is USAGE_CAP."""
        mr = e.fields.get("effective_mr")
        return usage(self.params.mmr, mr) if isinstance(mr, int) else None

    async def evaluate_positions(self, keys: list[PositionKey], head: Block) -> list[Evaluation]:
        """The full evaluation (TWAP and oracle ratios, no prefilter) of just these positions; leaves the
        per-block prefilter's caches alone."""
        out: list[Evaluation] = []
        for key in keys:
            pos, m, mi = self.positions.get((key.market, key.account)), self.states.get(key.market), self.info.get(key.market)
            if pos is not None and m is not None and mi is not None:
                e = self._evaluate_one(key, pos, m, mi, None)
                out.append(e or Evaluation(key, Status.HEALTHY, False))
        return out

    # ---- liquidation prices and what-if (keeper/risk/perp_liq.py) ----------------------------------
    def _liquidation_prices(self, pos: pm.Position, m: pm.MarketState, mi: MarketInfo) -> dict[str, int | None]:
        """`liq_price` / `full_liq_price` (index price, 1e18, on the quote token's unit grid) under the
        sustained move: index, vAMM spot and TWAP all at that price, funding as of now. ~0.8 ms a position:
        `keeper scan` only."""
        try:
            lp = pl.liquidation_prices(pos, m, self.params, tick=pl.price_tick(mi.quote_decimals))
        except ArithmeticError:
            return {"liq_price": None, "full_liq_price": None}
        return {"liq_price": lp.liq_price, "full_liq_price": lp.full_liq_price}

    async def evaluate_shocked(self, head: Block, factors: dict[str, int], *, twap: str = "sustained") -> list[Evaluation]:
        """What-if: every position with each market in `factors` moved — index × factor (mulD), the vAMM
        traded to the new index by the constant-product trade (perp_liq.shocked_market), and the TWAP
        `twap` = "sustained" (held for the 900 s window: the TWAP is the new spot) or "instant" (the current
        TWAP). The exact evaluation of `_evaluate_one` on that state (status, reward, lockout and policy
        rules); fields["notional"] is the SPOT notional after the move. Local maths on the state read at
        the last sync; nothing is read or written."""
        if twap not in ("sustained", "instant"):
            raise ValueError(f"twap model must be 'sustained' or 'instant', not {twap!r}")
        memos: dict[str, pm.TwapMemo] = self.__dict__.setdefault("_shock_memos", {})  # instant: one per market
        shocked: dict[str, pm.MarketState] = {}
        for amm, factor in factors.items():
            m = self.states.get(amm)
            if m is None:
                continue
            memo = memos.setdefault(amm, pm.TwapMemo()) if twap == "instant" else None
            shocked[amm] = pl.shocked_market(m, factor, sustained=twap == "sustained", memo=memo)
        out: list[Evaluation] = []
        for k, pos in self.positions.items():
            m, mi = shocked.get(k[0]) or self.states.get(k[0]), self.info.get(k[0])
            if m is None or mi is None:
                continue
            key = PositionKey(self.name, *k)
            e = self._evaluate_one(key, pos, m, mi, None) or Evaluation(key, Status.HEALTHY, False)
            try:
                e.fields["notional"] = pm.notional(pos, m, pm.PnlOption.SPOT)
            except pm.AmmMathError:
                e.fields["notional"] = None
            out.append(e)
        return out

    def repeatable(self, plan: Plan) -> bool:
        """A partial close leaves the position open; if it is still below maintenance the same call
        liquidates it again in the same block (liquidation is not subject to the one-action rule)."""
        return plan.kind == "partial"

    def position_for_call(self, to: str, data: bytes) -> PositionKey | None:
        """`liquidate(amm, trader)` / `liquidateWithSlippage(amm, trader, limit)` on this ClearingHouse."""
        if to_checksum_address(to) != self.ch or len(data) < 68 or data[:4] not in _LIQUIDATE_SELECTORS:
            return None
        amm, trader = to_checksum_address(data[16:36]), to_checksum_address(data[48:68])
        return PositionKey(self.name, amm, trader) if amm in self.info else None

    def closeness(self, e: Evaluation) -> int | None:
        """Effective margin ratio − maintenance (1e18; < 0 liquidatable): the scan's sort key."""
        mr = e.fields.get("effective_mr")
        return mr - self.params.mmr if isinstance(mr, int) else None

    async def rewind(self, block_number: int) -> None:
        """Re-index events after `block_number` and re-read every position they touch."""
        self.events.rewind(block_number)
        self.dirty.update(self.positions)
        for cache in self.snapshots.values():
            cache.items.clear()
            cache.length = 0

    def liquidation_log_filter(self) -> tuple[list[str], list[str]] | None:
        return [self.ch], [POSITION_LIQUIDATED.topic0]

    async def liquidations_in(self, logs: list[dict], block: int) -> list[Liquidation]:
        """`PositionLiquidated` of this ClearingHouse: the liquidator's fee (quote token, floored to its
        decimals as `outcome` reads ours); partial when the same transaction's PositionChanged leaves a size."""
        out: list[Liquidation] = []
        size_after: dict[tuple[str, str], int] = {}
        for lg in logs:
            if lg["address"].lower() != self.ch.lower() or not lg["topics"]:
                continue
            if lg["topics"][0] == POSITION_CHANGED.topic0:
                ev = POSITION_CHANGED.decode(lg)
                size_after[(ev["amm"], ev["trader"])] = ev["positionSizeAfter"]
            elif lg["topics"][0] == POSITION_LIQUIDATED.topic0:
                ev = POSITION_LIQUIDATED.decode(lg)
                amm, trader = ev["amm"], ev["trader"]
                mi = self.info.get(amm)
                reward = pm.token_floor(ev["liquidationFee"], mi.quote_decimals if mi else 18)
                out.append(
                    Liquidation(PositionKey(self.name, amm, trader), ev["liquidator"], reward, "full", int(lg["logIndex"], 16))
                )
        # PositionChanged may come before or after PositionLiquidated in the transaction: kind from the last one
        return [
            Liquidation(x.key, x.liquidator, x.reward, "partial" if size_after.get(x.key[1:]) else "full", x.log_index)
            for x in out
        ]


ADAPTER = PerpV1Adapter
