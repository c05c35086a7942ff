"""Curve crvUSD / LlamaLend (LLAMMA) adapter: soft-liquidation aware, hard-liquidates loans with
health(user, True) < 0 when what the keeper receives is worth more than what it pays plus gas.

Per block (calls grow with markets, not loans): one eth_getLogs page over every controller
(UserState/Borrow/Repay/Liquidate/RemoveCollateral mark loans dirty), one batched read of every
market's active band, oracle price and loan count (+ the dirty loans' state), and the paged
`users_to_liquidate(from, limit)` scan, which is the protocol's own liquidatable set. Only the
liquidatable loans get `tokens_to_liquidate` (eth_call from the keeper: it depends on msg.sender).
Works on every known controller variant — M1/M2, LlamaLend markets 0–7, 8 and 9–10, V3 — which
it identifies by asking each controller (eth_call probes, `probe_controller_variant`), never from
its bytecode: 0.3.10's hash-table dispatcher keeps selectors as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address
from pydantic import Field, model_validator

from keeper.abi import Abi, abi, flat_decoder
from keeper.adapters.base import Adapter, Liquidation, usage
from keeper.config import Address, NonNegDec, ProtocolConfig, Ratio
from keeper.indexer import EventIndexer
from keeper.multicall import Call, CallFailed
from keeper.probe import PROBE_SENDER, answers, probe, revert_reason
from keeper.risk import llamma as lm
from keeper.risk import llamma_bands as lb
from keeper.routes import RouteConfig, RouteError, min_out_for, quote_curve
from keeper.rpc import ExecutionReverted, RpcClient, RpcError
from keeper.types import Block, Evaluation, Outcome, Plan, PositionKey, Status
from keeper.units import to_units

WAD = 10**18
MAX_UINT = 2**256 - 1
ZERO = "0x0000000000000000000000000000000000000000"

M2 = abi("llamma/Controller_M2")
V3 = abi("llamma/Controller_V3")
PROBES = abi("llamma/Controller_Probes")  # entry points that exist in some variants only
AMM = abi("llamma/AMM")
CFACTORY = abi("llamma/ControllerFactory")
LFACTORY = abi("llamma/LendingFactory")
ERC20 = abi("common/ERC20")
LIQUIDATOR = abi("llamma/Liquidator")  # the keeper's own contract (contracts/llamma/Liquidator.vy), callback mode
LIQUIDATION_EV = LIQUIDATOR.event("Liquidation")
# Debt fractions tried per loan in callback mode: the route's price falls with the amount sold, so on a
# thin route a partial can earn more than the whole loan (all quoted in one batch per market).
CALLBACK_FRACS = (WAD, WAD * 3 // 4, WAD // 2, WAD // 4)
CALLBACK_GAS = 520_000  # typical gas of a liquidation through the contract with a 1–2 hop route
MAX_BAND_SPAN = 4096  # most bands (min_band..max_band) read per market for the band/health solver

USER_STATE = M2.event("UserState")
LIQUIDATE_EV = M2.event("Liquidate")
TRANSFER_TOPIC = ERC20.event("Transfer").topic0
_LIQUIDATE_SELECTORS = frozenset(
    f.selector
    for f in (M2.fn("liquidate", 2), M2.fn("liquidate", 3), M2.fn("liquidate_extended", 6), V3.fn("liquidate_extended", 5))
)
WATCH_TOPICS = [
    USER_STATE.topic0,
    M2.event("Borrow").topic0,
    M2.event("Repay").topic0,
    LIQUIDATE_EV.topic0,
    M2.event("RemoveCollateral").topic0,
]


@dataclass(frozen=True)
class ControllerVariant:
    """What the keeper must do differently per controller variant (PROTOCOLS.md §B.0–B.4)."""

    name: str  # "m2" | "l0-7" | "l8" | "l9-10" | "v3"
    description: str
    use_eth_abi: bool  # liquidate/liquidate_extended take use_eth: partial = 036aed88, else fed9698c
    borrowed_token: bool  # the stablecoin is borrowed_token(); without it, AMM.coins(0)
    ceil_debt: bool  # debt = ⌈initial·rate_mul/loan_rate_mul⌉ when n_loans > 1 (0.3.10 line)
    ceil_frac: bool  # the repaid d = ⌈debt·frac/1e18⌉ (V3), else ⌊…⌋

    @property
    def abi(self) -> Abi:
        return M2 if self.use_eth_abi else V3


CONTROLLER_VARIANTS = {
    v.name: v
    for v in (
        ControllerVariant(
            "m2", "crvUSD M1/M2 (Vyper 0.3.7)", use_eth_abi=True, borrowed_token=False, ceil_debt=False, ceil_frac=False
        ),
        ControllerVariant("l0-7", "LlamaLend markets 0-7 (0.3.10, inert use_eth)", True, True, ceil_debt=True, ceil_frac=False),
        ControllerVariant("l8", "LlamaLend market 8 (0.3.10, no use_eth)", False, True, ceil_debt=True, ceil_frac=False),
        ControllerVariant(
            "l9-10", "LlamaLend markets 9-10 (0.3.10, callback bytes)", False, True, ceil_debt=True, ceil_frac=False
        ),
        ControllerVariant("v3", "crvUSD/LlamaLend V3 (approvals, d rounded up)", False, True, ceil_debt=True, ceil_frac=True),
    )
}
NO_LOAN = "Loan doesn't exist"


class UnknownControllerVariant(RuntimeError):
    pass


async def probe_controller_variant(rpc: RpcClient, controller: str, block: int | str = "latest") -> ControllerVariant:
    """Identify a controller variant with eth_call probes from PROBE_SENDER (an address without a
    loan). What each probe relies on, as the upstream sources do it:

    - `borrowed_token()` answers only on the 0.3.10 line (LlamaLend, V3); M1/M2 lack it.
    - `remove_collateral(1, use_eth=False)` exists only where use_eth does (M1/M2, LlamaLend 0–7);
      for a caller without a loan it reverts early with "Loan doesn't exist"
      (`_add_collateral_borrow`), and with empty data where the selector does not exist.
      (`liquidate*` cannot tell this: for a user without a loan they revert with a bare
      `assert debt > 0`, i.e. empty data, whether or not the selector exists.)
    - `approval(address,address)` answers only on V3.
    - `borrow_more_extended(0, 0, 0x0, [], b"")` — the callback_bytes overload of 4d2e9bc6 — returns
      at once for debt = 0 where it exists (LlamaLend 9–10, V3) and reverts empty where it does not.
    """
    has_borrowed = await answers(rpc, controller, PROBES.fn("borrowed_token").encode(), block=block)
    rc = await revert_reason(rpc, controller, PROBES.fn("remove_collateral").encode(1, False), block=block)
    use_eth = rc is None or rc != ""  # a reason (normally NO_LOAN) means the entry point exists
    if not has_borrowed:
        if use_eth:
            return CONTROLLER_VARIANTS["m2"]
        raise UnknownControllerVariant(f"controller {controller}: no borrowed_token() and no use_eth entry points")
    if use_eth:
        return CONTROLLER_VARIANTS["l0-7"]
    if await answers(rpc, controller, PROBES.fn("approval").encode(PROBE_SENDER, PROBE_SENDER), block=block):
        return CONTROLLER_VARIANTS["v3"]
    with_bytes = await probe(rpc, controller, PROBES.fn("borrow_more_extended").encode(0, 0, ZERO, [], b""), block=block)
    return CONTROLLER_VARIANTS["l9-10" if with_bytes.ok else "l8"]


class LlammaConfig(ProtocolConfig):
    kind: Literal["llamma"]
    factory: Address | None = Field(
        None, description="crvUSD ControllerFactory or LlamaLend factory; all its markets are watched."
    )
    controllers: list[Address] = Field(default_factory=list, description="Controllers to watch (in addition to the factory's).")
    collateral_haircut: Ratio = Field(
        Decimal("0.01"), description="Sale haircut on collateral received, valued at the oracle price (0.01 = 1 %)."
    )
    min_x_slippage: Ratio = Field(
        Decimal("0.005"), description="Tolerance on the stablecoin the bands yield (min_x = expected × (1 − this))."
    )
    max_capital: NonNegDec | None = Field(
        None, description="Most stablecoin the keeper pays into one liquidation; above it a partial `frac` is used."
    )
    min_frac: Ratio = Field(
        Decimal("0.1"), description="Smallest debt fraction worth a partial liquidation when inventory/capital is short."
    )
    approval: Literal["exact", "bounded", "unlimited"] = Field(
        "bounded",
        description="Stablecoin approval to controllers: 'exact' (what one liquidation needs + 1 %), 'bounded' "
        "(approval_amount, topped up when short), 'unlimited' (2^256−1; only if you accept that risk).",
    )
    approval_amount: NonNegDec = Field(Decimal(100_000), description="Allowance set in 'bounded' mode (stablecoin units).")
    page_size: int = Field(200, ge=1, le=1000, description="Loans per users_to_liquidate(from, limit) call.")
    mode: Literal["inventory", "callback", "auto"] = Field(
        "inventory",
        description="'inventory': pay d − x from the keeper's stablecoin and keep the collateral; 'callback': liquidate "
        "through the keeper's liquidator contract, which sells the collateral along the market's route in the same "
        "transaction (needs `liquidator` and `routes`; markets without a route are skipped, logged); 'auto': per loan, "
        "the callback route when it clears min_profit on its live quote, else inventory (when affordable).",
    )
    liquidator: Address | None = Field(
        None, description="The keeper's Liquidator contract (`keeper liquidator deploy`); required in callback mode."
    )
    routes: dict[Address, RouteConfig] = Field(
        default_factory=dict,
        description="Per market (controller address): the swap route collateral → stablecoin, 1–3 hops "
        "{pool, kind = 'curve' | 'curve_crypto' | 'univ2', i, j, token_in, token_out}.",
    )
    route_slippage: Ratio = Field(
        Decimal("0.005"), description="Tolerance on the route's quote: min_out = quote × (1 − this), floored."
    )

    @model_validator(mode="after")
    def _has_markets(self) -> LlammaConfig:
        if self.factory is None and not self.controllers:
            raise ValueError("set factory or controllers")
        if self.factory is None:
            for controller in self.routes:
                if controller not in self.controllers:
                    raise ValueError(f"routes: {controller} is not one of `controllers` (not watched)")
        if self.mode in ("callback", "auto"):
            if self.liquidator is None:
                raise ValueError("mode = 'callback' needs liquidator (deploy one with `keeper liquidator deploy`)")
            if not self.routes:
                raise ValueError("mode = 'callback' needs routes: a swap route per market it liquidates")
            if self.factory is None:
                missing = [c for c in self.controllers if c not in self.routes]
                if missing:
                    raise ValueError(f"mode = 'callback': no route for controller {missing[0]} (add routes.\"{missing[0]}\")")
        return self


@dataclass
class Market:
    controller: str
    amm: str
    abi: Abi
    variant: str  # ControllerVariant.name
    ceil_debt: bool
    stablecoin: str
    collateral: str
    collateral_decimals: int
    collateral_symbol: str
    stable_symbol: str
    label: str
    use_eth_abi: bool = False  # partial liquidations use the 6-argument use_eth liquidate_extended
    ceil_frac: bool = False  # the repaid d is rounded up
    active_band: int = 0
    price_oracle: int = 0
    n_loans: int = 0
    liquidation_discount: int = 0

    @property
    def collateral_precision(self) -> int:
        return 10 ** (18 - self.collateral_decimals)


@dataclass
class Loan:
    collateral: int = 0  # y in the bands, native units (user_state[0])
    x: int = 0  # stablecoin in the bands (user_state[1])
    debt: int = 0
    n_bands: int = 0
    n1: int = 0
    n2: int = 0
    soft: bool = False


@dataclass
class Liquidatable:
    x: int
    y: int
    debt: int
    health: int
    discount: int = 0
    pay_full: int | None = None  # tokens_to_liquidate(user) from the keeper


@dataclass
class ScanExtra:
    health_full: int | None = None
    health: int | None = None
    pay: int | None = None
    xy: tuple[int, int] | None = None


@dataclass(frozen=True)
class LoanRisk:
    """What the band/health solver (keeper/risk/llamma_bands.py) needs of one loan, read at one block."""

    user: lb.UserBands
    debt: int  # debt(user), 1e18
    discount: int  # liquidation_discounts(user), 1e18


@dataclass
class Inventory:
    balance: int = 0
    allowance: dict[str, int] = field(default_factory=dict)


def _loan_from_row(data: dict[str, Any]) -> Loan:
    """A loan from the position index (big ints stored as strings)."""
    return Loan(
        collateral=int(data["collateral"]),
        x=int(data["x"]),
        debt=int(data["debt"]),
        n_bands=int(data["n_bands"]),
        n1=int(data["n1"]),
        n2=int(data["n2"]),
        soft=bool(data["soft"]),
    )


def _loan_row(loan: Loan) -> dict:
    """A loan as stored in the position index (big ints as strings)."""
    return {k: v if isinstance(v, bool) else str(v) for k, v in loan.__dict__.items()}


class LlammaAdapter(Adapter):
    kind = "llamma"
    config_model = LlammaConfig
    typical_gas = 700_000
    independent_liquidations = True  # liquidating one borrower does not change another's bands

    def __init__(self, config: LlammaConfig, ctx):
        super().__init__(config, ctx)
        self.cfg: LlammaConfig = config
        self.mkts: dict[str, Market] = {}
        self.loans: dict[tuple[str, str], Loan] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.liquidatable: dict[tuple[str, str], Liquidatable] = {}
        self.inventory: dict[str, Inventory] = {}  # stablecoin → keeper balance/allowances
        self._inventory_stale = False  # re-read allowances at the next idle block (after a set-up approval)
        self.scan_extra: dict[tuple[str, str], ScanExtra] = {}
        # scan only (prepare_scan): each market's band state and each loan's bands/debt at the scan's head,
        # for the soft-liquidation range and the liquidation price (computed once per loan per scan)
        self.scan_bands: dict[str, lb.BandState] = {}
        self.scan_risk: dict[tuple[str, str], LoanRisk] = {}
        self._risk_fields_cache: dict[tuple[str, str], dict[str, int | None]] = {}
        # what-if: the band state read at one head, reused by every shock evaluated at that head
        self._shock_reads: tuple[str, dict[str, lb.BandState], dict[tuple[str, str], LoanRisk]] | None = None
        self.events = EventIndexer(
            ctx.rpc,
            ctx.store,
            config.name,
            start_block=config.start_block,
            page_size=ctx.config.chain.log_page_size,
            log=self.log,
        )
        self.value_symbol = "stablecoin"

    # ---- start-up ------------------------------------------------------------------------------
    def addresses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.cfg.factory:
            out[f"{self.name}.factory"] = self.cfg.factory
        for m in self.mkts.values():
            out[f"{self.name}.controller[{m.label}]"] = m.controller
            out[f"{self.name}.amm[{m.label}]"] = m.amm
        return out

    async def _factory_markets(self) -> list[tuple[str, str | None]]:
        f = self.cfg.factory
        assert f is not None  # called only when a factory is configured
        rpc = self.ctx.rpc
        try:
            n = CFACTORY.fn("n_collaterals").decode_one(await rpc.eth_call(f, CFACTORY.fn("n_collaterals").encode()))
            fab = CFACTORY
        except ExecutionReverted:
            n = LFACTORY.fn("market_count").decode_one(await rpc.eth_call(f, LFACTORY.fn("market_count").encode()))
            fab = LFACTORY
        calls = [Call(f, fab.fn("controllers").encode(i), flat_decoder(fab.fn("controllers"))) for i in range(n)]
        calls += [Call(f, fab.fn("amms").encode(i), flat_decoder(fab.fn("amms"))) for i in range(n)]
        res = await self.ctx.calls.run(calls)
        out: list[tuple[str, str | None]] = []
        for i in range(n):
            c, a = res[i], res[n + i]
            if isinstance(c, CallFailed):
                raise RuntimeError(f"factory.controllers({i}) failed: {c.reason}")
            out.append((to_checksum_address(c[0]), None if isinstance(a, CallFailed) else to_checksum_address(a[0])))
        return out

    async def start(self, head: Block) -> None:
        pairs: list[tuple[str, str | None]] = await self._factory_markets() if self.cfg.factory else []
        for c in self.cfg.controllers:
            if c not in [p[0] for p in pairs]:
                pairs.append((c, None))
        stable_hint = None
        if self.cfg.factory:
            try:
                stable_hint = to_checksum_address(
                    CFACTORY.fn("stablecoin").decode_one(
                        await self.ctx.rpc.eth_call(self.cfg.factory, CFACTORY.fn("stablecoin").encode())
                    )
                )
            except ExecutionReverted:
                stable_hint = None
        for controller, amm_hint in pairs:
            await self._add_market(controller, amm_hint, stable_hint)
        for market, account, data, _blk in self.ctx.store.load_positions(self.name):
            if market in self.mkts:
                self.loans[(market, account)] = _loan_from_row(data)
        if self.mkts:
            self.value_symbol = next(iter(self.mkts.values())).stable_symbol
        self.log.info(
            "llamma_started",
            markets={m.label: m.variant for m in self.mkts.values()},
            loans=len(self.loans),
            cursor=self.events.cursor,
        )

    async def _add_market(self, controller: str, amm_hint: str | None, stable_hint: str | None) -> None:
        rpc = self.ctx.rpc
        if await rpc.get_code(controller) in ("0x", "", None):
            raise RuntimeError(f"no contract code at controller {controller}")
        variant = await probe_controller_variant(rpc, controller)
        cabi = variant.abi
        has_borrowed = variant.borrowed_token
        calls = [
            Call(controller, cabi.fn("amm").encode(), flat_decoder(cabi.fn("amm"))),
            Call(controller, cabi.fn("collateral_token").encode(), flat_decoder(cabi.fn("collateral_token"))),
            Call(controller, cabi.fn("liquidation_discount").encode(), flat_decoder(cabi.fn("liquidation_discount"))),
        ]
        if has_borrowed:
            calls.append(Call(controller, V3.fn("borrowed_token").encode(), flat_decoder(V3.fn("borrowed_token"))))
        res = await self.ctx.calls.run(calls)
        for r in res:
            if isinstance(r, CallFailed):
                raise RuntimeError(f"controller {controller}: {r.reason}")
        amm = to_checksum_address(res[0][0])
        if amm_hint and amm_hint != amm:
            raise RuntimeError(f"controller {controller}: amm() {amm} differs from the factory's {amm_hint}")
        collateral = to_checksum_address(res[1][0])
        if has_borrowed:
            stable = to_checksum_address(res[3][0])
        else:
            coin0 = AMM.fn("coins").decode_one(await rpc.eth_call(amm, AMM.fn("coins").encode(0)))
            stable = to_checksum_address(coin0)
        if stable_hint and not has_borrowed and stable != stable_hint:
            self.log.warning("stablecoin_mismatch", controller=controller, amm_coin0=stable, factory=stable_hint)
        meta = await self.ctx.calls.run(
            [
                Call(collateral, ERC20.fn("decimals").encode(), flat_decoder(ERC20.fn("decimals"))),
                Call(collateral, ERC20.fn("symbol").encode(), flat_decoder(ERC20.fn("symbol"))),
                Call(stable, ERC20.fn("symbol").encode(), flat_decoder(ERC20.fn("symbol"))),
            ]
        )
        dec = 18 if isinstance(meta[0], CallFailed) else meta[0][0]
        csym = "collateral" if isinstance(meta[1], CallFailed) else meta[1][0]
        stable_symbol = "stablecoin" if isinstance(meta[2], CallFailed) else meta[2][0]
        label = csym if csym not in [m.label for m in self.mkts.values()] else f"{csym}-{controller[2:6]}"
        self.mkts[controller] = Market(
            controller=controller,
            amm=amm,
            abi=cabi,
            variant=variant.name,
            ceil_debt=variant.ceil_debt,
            stablecoin=stable,
            collateral=collateral,
            collateral_decimals=dec,
            collateral_symbol=csym,
            stable_symbol=stable_symbol,
            label=label,
            liquidation_discount=res[2][0],
            use_eth_abi=variant.use_eth_abi,
            ceil_frac=variant.ceil_frac,
        )
        self.log.info(
            "market_added", market=label, market_address=controller, amm=amm, variant=variant.name, collateral_decimals=dec
        )

    def markets(self) -> list[str]:
        return list(self.mkts)

    def market_label(self, market: str) -> str:
        m = self.mkts.get(market)
        return m.label if m else market

    def position_count(self) -> int:
        return len(self.loans)

    async def check_rows(self) -> list[tuple[str, bool, str]]:
        """Per market: variant, and the keeper's stablecoin balance and allowance to the controller; in
        callback mode the liquidator contract (code, owner = the keeper) and each market's route (its
        tokens match the market, and it quotes)."""
        res = await self.ctx.calls.run(self._inventory_calls())
        self._read_inventory(res)
        rows = []
        if self.cfg.liquidator is not None:
            from keeper.commands.liquidator import liquidator_rows  # noqa: PLC0415 - a command module; only for check

            rows += await liquidator_rows(self.ctx.rpc, self.cfg.liquidator, self.ctx.keeper, f"{self.name} liquidator")
            for m in self.mkts.values():
                route = self.cfg.routes.get(m.controller)
                if route is None:
                    rows.append(
                        (
                            f"{self.name} {m.label} route",
                            self.cfg.mode != "callback",
                            "no route: inventory" if self.cfg.mode == "auto" else "no route",
                        )
                    )
                    continue
                problem = route.endpoint_problem(m.collateral, m.stablecoin)
                if problem is None:
                    try:
                        one = 10**m.collateral_decimals
                        (quote,) = await quote_curve(self.ctx.rpc, route.to_hops(), [one], "latest")
                        detail = (
                            f"{len(route.to_hops())} hop(s); 1 {m.collateral_symbol} quotes {quote / WAD:.4f} {m.stable_symbol}"
                        )
                    except (RouteError, RpcError) as exc:
                        problem = f"quote failed: {exc}"
                rows.append((f"{self.name} {m.label} route", problem is None, problem or detail))
        for m in self.mkts.values():
            inv = self.inventory.get(m.stablecoin)
            allowance = inv.allowance.get(m.controller, 0) if inv else 0
            rows.append(
                (
                    f"{self.name} {m.label} ({m.variant})",
                    True,
                    f"{m.stable_symbol} balance {(inv.balance if inv else 0) / WAD:.2f}, allowance to controller "
                    f"{'unlimited' if allowance == MAX_UINT else f'{allowance / WAD:.2f}'} (approval mode {self.cfg.approval})",
                )
            )
        return rows

    def scan_columns(self) -> list[tuple[str, str, str]]:
        return [
            ("HEALTH", "health_full", "ratio"),
            ("SOFT", "soft", "bool"),
            ("CONVERTED", "converted", "ratio"),
            ("DEBT", "debt", "amount"),
            ("X", "x", "amount"),
            ("Y", "y_18", "amount"),
            ("TO PAY", "pay", "amount"),
            ("SOFT FROM", "soft_liq_from", "amount"),
            ("SOFT TO", "soft_liq_to", "amount"),
            ("LIQ PRICE", "liq_price", "amount"),
        ] + (
            [("ROUTE", "route", "str"), ("PROCEEDS", "quoted_proceeds", "amount"), ("ROUTE PROFIT", "route_profit", "amount")]
            if self.cfg.mode in ("callback", "auto")
            else []
        )

    def field_units(self) -> dict[str, str]:
        """`y` and `receive_y` stay integers in the collateral's own base units (its decimals vary)."""
        return {
            "receive_x": "amount",
            "notional": "amount",
            "price_oracle": "amount",
            "shock": "ratio",
            "health": "ratio",
            "frac": "ratio",
            "quoted_proceeds": "amount",
            "route_profit": "amount",
            "min_out": "amount",
        }

    # ---- per block -------------------------------------------------------------------------------
    async def sync(self, head: Block) -> None:
        await self._index(head)
        await self._refresh(head)

    async def _index(self, head: Block) -> None:
        await self.events.advance(head, list(self.mkts), [WATCH_TOPICS], self._mark_dirty)

    def _mark_dirty(self, logs: list[dict]) -> None:
        for lg in logs:
            c = to_checksum_address(lg["address"])
            topic = lg["topics"][0]
            # Liquidate(liquidator[i], user[i], ...): the user is the second indexed field.
            user_topic = lg["topics"][2] if topic == LIQUIDATE_EV.topic0 else lg["topics"][1]
            self.dirty.add((c, to_checksum_address("0x" + user_topic[-40:])))

    async def _refresh(self, head: Block) -> None:
        mk = list(self.mkts.values())
        calls: list[Call] = []
        for m in mk:
            calls += [
                Call(m.amm, AMM.fn("active_band").encode(), flat_decoder(AMM.fn("active_band"))),
                Call(m.amm, AMM.fn("price_oracle").encode(), flat_decoder(AMM.fn("price_oracle"))),
                Call(m.controller, m.abi.fn("n_loans").encode(), flat_decoder(m.abi.fn("n_loans"))),
            ]
        dirty = [k for k in self.dirty if k[0] in self.mkts]
        for c, u in dirty:
            m = self.mkts[c]
            calls += [
                Call(c, m.abi.fn("user_state").encode(u), flat_decoder(m.abi.fn("user_state"))),
                Call(m.amm, AMM.fn("read_user_tick_numbers").encode(u), flat_decoder(AMM.fn("read_user_tick_numbers"))),
            ]
        res = await self.ctx.calls.run(calls, head.number)
        for i, m in enumerate(mk):
            band, price, n = res[3 * i : 3 * i + 3]
            if any(isinstance(r, CallFailed) for r in (band, price, n)):
                self.log.warning("market_read_failed", controller=m.controller)
                continue
            m.active_band, m.price_oracle, m.n_loans = band[0], price[0], n[0]
        off = 3 * len(mk)
        changed: set[tuple[str, str]] = set()
        deletes = []
        for j, (c, u) in enumerate(dirty):
            st, ticks = res[off + 2 * j], res[off + 2 * j + 1]
            if isinstance(st, CallFailed) or isinstance(ticks, CallFailed):
                continue
            self.dirty.discard((c, u))
            collateral, x, debt, nb = st
            if debt == 0:
                if self.loans.pop((c, u), None) is not None:
                    deletes.append((c, u))
                    self.log.info("loan_closed", market=self.mkts[c].label, account=u)
                continue
            prev = self.loans.get((c, u))
            self.loans[(c, u)] = Loan(collateral, x, debt, nb, ticks[0], ticks[1], prev.soft if prev else False)
            changed.add((c, u))
        # Soft-liquidation transitions (n1 ≤ active band), logged once per change and persisted.
        for (c, u), loan in self.loans.items():
            market = self.mkts.get(c)
            if market is None:
                continue
            m = market
            soft = lm.in_soft_liquidation(loan.n1, m.active_band)
            if soft != loan.soft:
                loan.soft = soft
                changed.add((c, u))
                self.log.info(
                    "loan_soft_liquidation_entered" if soft else "loan_soft_liquidation_left",
                    market=m.label,
                    account=u,
                    n1=loan.n1,
                    n2=loan.n2,
                    active_band=m.active_band,
                    block=head.number,
                )
        self.ctx.store.put_positions(self.name, [(c, u, _loan_row(self.loans[(c, u)]), head.number) for c, u in changed])
        self.ctx.store.delete_positions(self.name, deletes)
        await self._scan_liquidatable(head)

    async def _scan_liquidatable(self, head: Block) -> None:
        """The protocol's own liquidatable set: users_to_liquidate(from, limit), paged."""
        reqs: list[tuple[Market, int, int]] = []
        for m in self.mkts.values():
            for start in range(0, m.n_loans, self.cfg.page_size):
                reqs.append((m, start, min(self.cfg.page_size, m.n_loans - start)))
        outs = await self.ctx.rpc.batch(
            [
                (
                    "eth_call",
                    [{"to": m.controller, "data": "0x" + m.abi.fn("users_to_liquidate", 2).encode(s, n).hex()}, hex(head.number)],
                )
                for m, s, n in reqs
            ]
        )
        found: dict[tuple[str, str], Liquidatable] = {}
        for (m, s, _n), out in zip(reqs, outs, strict=True):
            if isinstance(out, RpcError):
                self.log.warning("users_to_liquidate_failed", controller=m.controller, start=s, error=out.message)
                continue
            (rows,) = abi_decode(["(address,uint256,uint256,uint256,int256)[]"], bytes.fromhex(out[2:]))
            for user, x, y, debt, h in rows:
                found[(m.controller, to_checksum_address(user))] = Liquidatable(x, y, debt, h)
        self.liquidatable = found
        if not found:
            if self._inventory_stale:  # a set-up approval went out: read the allowances it changes
                self._inventory_stale = False
                self._read_inventory(await self.ctx.calls.run(self._inventory_calls(), head.number))
            return
        keys = list(found)
        pays = await self._pays(keys, head)
        disc = await self.ctx.calls.run(
            [
                Call(
                    c,
                    self.mkts[c].abi.fn("liquidation_discounts").encode(u),
                    flat_decoder(self.mkts[c].abi.fn("liquidation_discounts")),
                )
                for c, u in keys
            ]
            + self._inventory_calls(),
            head.number,
        )
        for k, p, d in zip(keys, pays, disc[: len(keys)], strict=True):
            found[k].pay_full = None if isinstance(p, CallFailed) else p[0]
            found[k].discount = self.mkts[k[0]].liquidation_discount if isinstance(d, CallFailed) else d[0]
        self._read_inventory(disc[len(keys) :])

    async def _pays(self, keys: list[tuple[str, str]], head: Block) -> list:
        """tokens_to_liquidate(user) for each (controller, user). It depends on msg.sender, so these
        are plain eth_calls from the keeper (batched), never through Multicall3."""
        calls = []
        for c, u in keys:
            fn = self.mkts[c].abi.fn("tokens_to_liquidate", 1)
            calls.append(Call(c, fn.encode(u), flat_decoder(fn)))
        return await self.ctx.calls.run(calls, head.number, sender=self.ctx.keeper)

    def _inventory_calls(self) -> list[Call]:
        calls = []
        for s in sorted({m.stablecoin for m in self.mkts.values()}):
            calls.append(Call(s, ERC20.fn("balanceOf").encode(self.ctx.keeper), flat_decoder(ERC20.fn("balanceOf"))))
        for m in self.mkts.values():
            calls.append(
                Call(
                    m.stablecoin, ERC20.fn("allowance").encode(self.ctx.keeper, m.controller), flat_decoder(ERC20.fn("allowance"))
                )
            )
        return calls

    def _read_inventory(self, res: list) -> None:
        stables = sorted({m.stablecoin for m in self.mkts.values()})
        self.inventory = {s: Inventory(0 if isinstance(r, CallFailed) else r[0]) for s, r in zip(stables, res, strict=False)}
        for m, r in zip(self.mkts.values(), res[len(stables) :], strict=True):
            self.inventory[m.stablecoin].allowance[m.controller] = 0 if isinstance(r, CallFailed) else r[0]

    # ---- evaluation ----------------------------------------------------------------------------
    def _callback(self, m: Market) -> bool:
        """Does this market liquidate through the liquidator contract (callback mode with a route)?"""
        return self.cfg.mode in ("callback", "auto") and m.controller in self.cfg.routes

    def _budget(self, m: Market) -> int:
        """Stablecoin (1e18) the keeper can put into one liquidation in this market (unbounded in callback
        mode: the route pays)."""
        if self._callback(m):
            return 2**255
        inv = self.inventory.get(m.stablecoin, Inventory())
        budget = inv.balance
        if self.cfg.max_capital is not None:
            budget = min(budget, to_units(self.cfg.max_capital, 18))
        return budget

    def evaluate(self, head: Block, *, full: bool = False) -> list[Evaluation]:
        return self._evaluate(self.scan_extra if full else None, risk=full)

    def _evaluate(
        self, extras: dict[tuple[str, str], ScanExtra] | None, only: set[tuple[str, str]] | None = None, *, risk: bool = False
    ) -> list[Evaluation]:
        """Every loan (or just `only`), with the on-chain `extras` (health, band contents) where given and,
        with `risk` (scan), the soft-liquidation band range and the liquidation price."""
        out: list[Evaluation] = []
        min_frac = to_units(self.cfg.min_frac, 18)
        keys = set(self.loans) | set(self.liquidatable)
        if only is not None:
            keys &= only
        for c, u in sorted(keys):
            m = self.mkts.get(c)
            if m is None:
                continue
            loan = self.loans.get((c, u))
            liq = self.liquidatable.get((c, u))
            fields: dict = {"market": m.label, "debt": liq.debt if liq else (loan.debt if loan else None)}
            if loan is not None:
                fields.update(
                    n1=loan.n1, n2=loan.n2, soft=lm.in_soft_liquidation(loan.n1, m.active_band), active_band=m.active_band
                )
            if risk:
                fields.update(self._risk_fields((c, u)))
            extra = extras.get((c, u)) if extras is not None else None
            if extra is not None:
                fields.update(health_full=extra.health_full, health=extra.health, pay=extra.pay)
                if extra.xy is not None:
                    x, y = extra.xy
                    fields.update(
                        x=x,
                        y=y,
                        y_18=y * m.collateral_precision,
                        converted=lm.converted_share(x, y, m.price_oracle, m.collateral_precision),
                    )
            key = PositionKey(self.name, c, u)
            if liq is None:
                status = Status.SOFT if fields.get("soft") else Status.HEALTHY
                out.append(Evaluation(key, status, False, None, fields))
                continue
            fields.update(
                health_full=liq.health,
                x=liq.x,
                y=liq.y,
                y_18=liq.y * m.collateral_precision,
                pay=liq.pay_full,
                converted=lm.converted_share(liq.x, liq.y, m.price_oracle, m.collateral_precision),
            )
            if liq.pay_full is None:
                out.append(Evaluation(key, Status.FULL, False, None, fields, reason="tokens_to_liquidate failed"))
                continue
            need = liq.pay_full + liq.pay_full // 100  # debt keeps accruing until the tx lands
            frac = lm.affordable_frac(need, self._budget(m), min_frac)
            if frac is None:
                out.append(
                    Evaluation(
                        key, Status.UNAFFORDABLE, False, None, fields, reason=f"needs {need} stablecoin, budget {self._budget(m)}"
                    )
                )
                continue
            po = self._payout(m, liq, frac)
            fields.update(
                frac=frac, kind="full" if frac == WAD else "frac", receive_y=po.y_withdrawn, receive_x=po.receive_stable
            )
            status = Status.FULL if frac == WAD else Status.PARTIAL
            out.append(Evaluation(key, status, True, po.value, fields, payload=liq))
        return out

    def _payout(self, m: Market, liq: Liquidatable, frac: int) -> lm.Payout:
        """What liquidating `frac` of this loan pays and yields (value token 1e18), by the market's rounding."""
        return lm.payout(
            debt=liq.debt,
            x=liq.x,
            y=liq.y,
            frac=frac,
            health_limit=liq.discount,
            price_oracle=m.price_oracle,
            haircut=to_units(self.cfg.collateral_haircut, 18),
            collateral_precision=m.collateral_precision,
            ceil=m.ceil_frac,
        )

    async def prepare_scan(self, head: Block) -> None:
        """health (both), tokens_to_liquidate (from the keeper) and band contents of every loan; the band
        state of every market and every loan's bands, shares and debt (for the liquidation price)."""
        self.scan_extra = await self._read_extra(list(self.loans), head)
        self._risk_fields_cache = {}
        try:
            self.scan_bands, self.scan_risk = await self._read_risk(list(self.mkts), sorted(self.loans), head)
        except RpcError as exc:
            self.log.warning("band_state_read_failed", error=str(exc))
            self.scan_bands, self.scan_risk = {}, {}

    def _risk_fields(self, key: tuple[str, str]) -> dict[str, int | None]:
        """soft_liq_from / soft_liq_to (the loan's top band's upper price, its last band's lower price) and
        liq_price (the oracle price at which health(user, True), after arbitrage to it, crosses 0), 1e18
        stablecoin per collateral; None where the band state could not be read or there is no crossing."""
        cached = self._risk_fields_cache.get(key)
        if cached is not None:
            return cached
        st, r = self.scan_bands.get(key[0]), self.scan_risk.get(key)
        out: dict[str, int | None] = {"soft_liq_from": None, "soft_liq_to": None, "liq_price": None}
        if st is not None and r is not None:
            out["soft_liq_from"], out["soft_liq_to"] = lb.soft_liquidation_range(st, r.user.n1, r.user.n2)
            try:
                out["liq_price"] = lb.liquidation_price(st, r.user, r.debt, r.discount, st.price_oracle)
            except (lb.BandMathError, ZeroDivisionError) as exc:
                self.log.warning("liquidation_price_failed", market=self.market_label(key[0]), account=key[1], error=str(exc))
        self._risk_fields_cache[key] = out
        return out

    async def _read_risk(
        self, controllers: list[str], keys: list[tuple[str, str]], head: Block
    ) -> tuple[dict[str, lb.BandState], dict[tuple[str, str], LoanRisk]]:
        """At `head`, batched in two rounds: each market's AMM parameters (A, fee, p_oracle_up(0), active /
        min / max band, oracle price, the stablecoin's decimals) and each loan's bands, get_xy, debt and
        liquidation discount; then every band's x and y between min_band and max_band (at most
        MAX_BAND_SPAN around the active band). A market or loan whose reads fail is left out."""
        mk = [self.mkts[c] for c in controllers if c in self.mkts]
        per_market = ("A", "fee", "p_oracle_up", "active_band", "min_band", "max_band", "price_oracle")
        calls: list[Call] = []
        for m in mk:
            for name in per_market:
                fn = AMM.fn(name)
                calls.append(Call(m.amm, fn.encode(0) if name == "p_oracle_up" else fn.encode(), flat_decoder(fn)))
            calls.append(Call(m.stablecoin, ERC20.fn("decimals").encode(), flat_decoder(ERC20.fn("decimals"))))
        ticks = AMM.fn("read_user_tick_numbers")
        for c, u in keys:
            m = self.mkts[c]
            calls += [
                Call(m.amm, ticks.encode(u), flat_decoder(ticks)),
                Call(c, m.abi.fn("debt").encode(u), flat_decoder(m.abi.fn("debt"))),
                Call(c, m.abi.fn("liquidation_discounts").encode(u), flat_decoder(m.abi.fn("liquidation_discounts"))),
            ]
        res = await self.ctx.calls.run(calls, head.number)
        # get_xy answers up to 2 × 50 words: plain eth_calls (batched), not through an aggregator
        get_xy = AMM.fn("get_xy")
        xys = await self.ctx.rpc.batch(
            [("eth_call", [{"to": self.mkts[c].amm, "data": "0x" + get_xy.encode(u).hex()}, hex(head.number)]) for c, u in keys]
        )
        k = len(per_market) + 1
        states: dict[str, lb.BandState] = {}
        spans: list[tuple[lb.BandState, str, int, int]] = []
        for i, m in enumerate(mk):
            r = res[k * i : k * i + k]
            if any(isinstance(v, CallFailed) for v in r[:-1]):
                self.log.warning("band_state_read_failed", market=m.label)
                continue
            a, fee, base, active, lo, hi, p_o = (v[0] for v in r[:-1])
            dec = 18 if isinstance(r[-1], CallFailed) else r[-1][0]
            st = lb.BandState(a, fee, base, active, lo, hi, {}, 10 ** (18 - dec), m.collateral_precision, p_o)
            if hi - lo + 1 > MAX_BAND_SPAN:
                self.log.warning("band_span_clipped", market=m.label, min_band=lo, max_band=hi, read=MAX_BAND_SPAN)
                lo = max(lo, active - MAX_BAND_SPAN // 2)
                hi = min(hi, lo + MAX_BAND_SPAN - 1)
            states[m.controller] = st
            spans.append((st, m.amm, lo, hi))
        band_calls: list[Call] = []
        bx, by = AMM.fn("bands_x"), AMM.fn("bands_y")
        for _st, amm, lo, hi in spans:
            for n in range(lo, hi + 1):
                band_calls += [Call(amm, bx.encode(n), flat_decoder(bx)), Call(amm, by.encode(n), flat_decoder(by))]
        bres = await self.ctx.calls.run(band_calls, head.number)
        j = 0
        for st, amm, lo, hi in spans:
            size = 2 * (hi - lo + 1)
            part = bres[j : j + size]
            j += size
            if any(isinstance(v, CallFailed) for v in part):
                self.log.warning("band_state_read_failed", amm=amm)
                states = {c: s for c, s in states.items() if s is not st}
                continue
            for n, (x, y) in zip(range(lo, hi + 1), zip(part[0::2], part[1::2], strict=True), strict=True):
                if x[0] or y[0]:
                    st.bands[n] = (x[0], y[0])
        risk: dict[tuple[str, str], LoanRisk] = {}
        off = k * len(mk)
        for i, (c, u) in enumerate(keys):
            t, debt, disc = res[off + 3 * i : off + 3 * i + 3]
            xy = xys[i]
            st_or_none = states.get(c)
            if st_or_none is None or isinstance(xy, RpcError) or any(isinstance(v, CallFailed) for v in (t, debt, disc)):
                continue
            if debt[0] == 0:
                continue
            xs, ys = get_xy.decode(bytes.fromhex(xy[2:]))[0]
            if not xs:
                continue  # no liquidity in the bands
            user = lb.UserBands.from_xy(t[0], t[1], list(xs), list(ys), st_or_none)
            risk[(c, u)] = LoanRisk(user, debt[0], disc[0])
        return states, risk

    async def _read_extra(
        self, keys: list[tuple[str, str]], head: Block, *, pays: bool = True
    ) -> dict[tuple[str, str], ScanExtra]:
        calls: list[Call] = []
        for c, u in keys:
            m = self.mkts[c]
            calls += [
                Call(c, m.abi.fn("health", 2).encode(u, True), flat_decoder(m.abi.fn("health", 2))),
                Call(c, m.abi.fn("health", 1).encode(u), flat_decoder(m.abi.fn("health", 1))),
                Call(m.amm, AMM.fn("get_sum_xy").encode(u), flat_decoder(AMM.fn("get_sum_xy"))),
            ]
        res = await self.ctx.calls.run(calls, head.number)
        paid = await self._pays(keys, head) if pays else [None] * len(keys)
        extra: dict[tuple[str, str], ScanExtra] = {}
        for i, k in enumerate(keys):
            hf, h, xy = res[3 * i : 3 * i + 3]
            p = paid[i]
            extra[k] = ScanExtra(
                None if isinstance(hf, CallFailed) else hf[0],
                None if isinstance(h, CallFailed) else h[0],
                None if p is None or isinstance(p, CallFailed) else p[0],
                None if isinstance(xy, CallFailed) else (xy[0], xy[1]),
            )
        return extra

    async def evaluate_positions(self, keys: list[PositionKey], head: Block) -> list[Evaluation]:
        """Just these loans, with health(user, True), health(user) and get_sum_xy read on-chain (3 batched
        calls per loan; no tokens_to_liquidate)."""
        wanted = [(k.market, k.account) for k in keys if (k.market, k.account) in self.loans and k.market in self.mkts]
        if not wanted:
            return []
        return self._evaluate(await self._read_extra(wanted, head, pays=False), set(wanted))

    async def evaluate_shocked(self, head: Block, factors: dict[str, int]) -> list[Evaluation]:
        """What-if (keeper/risk/llamma_bands.py): each market's oracle price × factors[market] (1e18; markets
        not in `factors` stay as they are at head), its AMM arbitraged to that price as llamma_env.arbitrage
        does (get_amount_for_price + exchange, the AMM's own integer maths, repeated while it trades), then
        every loan's health(user, True) on the resulting bands. Liquidatable (health < 0) loans get the
        status and est_reward `evaluate` gives them (full, or a partial/unaffordable by the keeper's
        stablecoin budget at `head`; an unaffordable one, not a candidate, carries the reward of a full
        liquidation), valued as in inventory mode: collateral at the shocked oracle less the haircut + stablecoin − debt repaid. In
        callback mode too: a route's quote cannot be shocked (fields["valuation"] says so).
        fields["notional"] = debt (1e18). Reads at `head` only: band state, each loan's bands, get_xy, debt
        and discount, the keeper's balance."""
        keys = sorted(k for k in self.loans if k[0] in self.mkts)
        if self._shock_reads is None or self._shock_reads[0] != head.hash:  # one read per head (what-if steps)
            states, risk = await self._read_risk(list(self.mkts), keys, head)
            self._read_inventory(await self.ctx.calls.run(self._inventory_calls(), head.number))
            self._shock_reads = (head.hash, states, risk)
        _hash, states, risk = self._shock_reads
        haircut = to_units(self.cfg.collateral_haircut, 18)
        min_frac = to_units(self.cfg.min_frac, 18)
        shocked: dict[str, tuple[int, int, lb.BandState]] = {}
        for c, st in states.items():
            if c not in factors:  # not shocked: the bands as they are at head
                shocked[c] = (WAD, st.price_oracle, st)
                continue
            p = st.price_oracle * factors[c] // WAD
            shocked[c] = (factors[c], p, st.arbitraged(p))
        out: list[Evaluation] = []
        for c, u in keys:
            m = self.mkts[c]
            r = risk.get((c, u))
            if r is None or c not in shocked:
                self.log.warning("whatif_loan_skipped", market=m.label, account=u, reason="band state not read")
                continue
            factor, p, st = shocked[c]
            h = lb.health_full(st, r.user, r.debt, r.discount, p)
            x, y = lb.user_xy(st, r.user)
            soft = lm.in_soft_liquidation(r.user.n1, st.active_band)
            key = PositionKey(self.name, c, u)
            fields: dict[str, Any] = {
                "market": m.label,
                "notional": r.debt,
                "debt": r.debt,
                "shock": factor,
                "price_oracle": p,
                "health_full": h,
                "n1": r.user.n1,
                "n2": r.user.n2,
                "active_band": st.active_band,
                "soft": soft,
                "x": x,
                "y": y,
                "y_18": y * m.collateral_precision,
                "converted": lm.converted_share(x, y, p, m.collateral_precision),
            }
            if h >= 0:
                out.append(Evaluation(key, Status.SOFT if soft else Status.HEALTHY, False, None, fields))
                continue
            pay = lm.tokens_to_pay(r.debt, x, WAD, r.discount, ceil=m.ceil_frac)
            need = pay + pay // 100
            budget = self._budget(m)
            fields.update(
                pay=pay, valuation="callback: route not shocked, oracle less haircut" if self._callback(m) else "inventory"
            )
            affordable = lm.affordable_frac(need, budget, min_frac)
            frac = WAD if affordable is None else affordable
            po = lm.payout(
                debt=r.debt,
                x=x,
                y=y,
                frac=frac,
                health_limit=r.discount,
                price_oracle=p,
                haircut=haircut,
                collateral_precision=m.collateral_precision,
                ceil=m.ceil_frac,
            )
            fields.update(
                frac=frac, kind="full" if frac == WAD else "frac", receive_y=po.y_withdrawn, receive_x=po.receive_stable
            )
            if affordable is None:  # the reward a full liquidation would pay, which the keeper cannot fund now
                reason = f"needs {need} stablecoin, budget {budget}"
                out.append(Evaluation(key, Status.UNAFFORDABLE, False, po.value, fields, reason=reason))
                continue
            out.append(Evaluation(key, Status.FULL if frac == WAD else Status.PARTIAL, True, po.value, fields))
        return out

    def position_for_call(self, to: str, data: bytes) -> PositionKey | None:
        """Any form of `liquidate` / `liquidate_extended` on one of our controllers (the user is the first
        argument in every variant)."""
        controller = to_checksum_address(to)
        if controller not in self.mkts or len(data) < 36 or data[:4] not in _LIQUIDATE_SELECTORS:
            return None
        return PositionKey(self.name, controller, to_checksum_address(data[16:36]))

    def risk_usage(self, e: Evaluation) -> int | None:
        """debt ÷ what the bands are worth at the liquidation discount (plus the full-health bonus) =
        1/(1 + health(user, True)) (docs/PROTOCOLS.md §B.3): 100 % at health 0, > 100 % exactly when
        hard-liquidatable (health < 0); health ≤ −100 % (nothing left) is USAGE_CAP."""
        h = e.fields.get("health_full")
        return usage(WAD, WAD + h) if isinstance(h, int) and not isinstance(h, bool) else None

    # ---- plans -------------------------------------------------------------------------------------
    def _liquidate_call(self, m: Market, user: str, min_x: int, frac: int) -> bytes:
        if frac == WAD:
            return m.abi.fn("liquidate", 2).encode(user, min_x)  # the 2-argument form works on every version
        if m.use_eth_abi:  # M1/M2, LlamaLend 0-7: 036aed88; collateral paid as the token (use_eth=False)
            return M2.fn("liquidate_extended", 6).encode(user, min_x, frac, False, ZERO, [])
        return V3.fn("liquidate_extended", 5).encode(user, min_x, frac, ZERO, [])  # fed9698c

    async def confirm(self, candidates: list[Evaluation], head: Block) -> list[Plan]:
        """Plans for the candidates, best first, within the keeper's stablecoin budget (inventory and
        the capital cap, reserved across the plans of one block). Where the controller's allowance does
        not cover this block's plans, every plan that pays carries the same approval, sized to all of them
        (per the approval mode): it is sent once, right before them."""
        if self.cfg.mode in ("callback", "auto"):
            plans, rest = await self._confirm_callback(candidates, head)
            if self.cfg.mode == "callback" or not rest:
                return plans
            # auto: the loans no route serves profitably go the inventory way (its own budget checks)
            return plans + await self._confirm_inventory(rest, head)
        return await self._confirm_inventory(candidates, head)

    async def _confirm_inventory(self, candidates: list[Evaluation], head: Block) -> list[Plan]:
        """Inventory mode: the keeper pays d − x from its own stablecoin and keeps the collateral."""
        slippage = to_units(self.cfg.min_x_slippage, 18)
        min_frac = to_units(self.cfg.min_frac, 18)
        reserved: dict[str, int] = {}  # stablecoin → reserved this block
        by_controller: dict[str, list[tuple[Plan, int]]] = {}
        for e in sorted(candidates, key=lambda e: e.est_reward or 0, reverse=True):
            m = self.mkts[e.key.market]
            liq = e.payload
            if not isinstance(liq, Liquidatable):  # every candidate evaluate() makes carries its on-chain figures
                continue
            budget = self._budget(m) - reserved.get(m.stablecoin, 0)
            frac, pay = WAD, liq.pay_full
            if pay is None:  # evaluate() makes no candidate without tokens_to_liquidate
                continue
            if pay + pay // 100 > budget:
                frac = lm.affordable_frac(pay + pay // 100, max(budget, 0), min_frac) or 0
                pay = await self._pay_for(m, e.key.account, frac, head) if frac else None
                while pay is not None and pay + pay // 100 > budget and frac * 9 // 10 >= min_frac:
                    frac = frac * 9 // 10
                    pay = await self._pay_for(m, e.key.account, frac, head)
                if not frac or pay is None or pay + pay // 100 > budget:
                    self.log.info("liquidation_unaffordable", market=m.label, account=e.key.account, budget=budget)
                    continue
            need = pay + pay // 100  # debt accrues until the tx lands; V3 rounds the repaid debt up
            reserved[m.stablecoin] = reserved.get(m.stablecoin, 0) + need
            po = self._payout(m, liq, frac)
            min_x = lm.min_x_for(po.x_withdrawn, slippage)
            fields = dict(
                e.fields,
                frac=frac,
                pay=pay,
                min_x=min_x,
                expected_y=po.y_withdrawn,
                expected_x=po.x_withdrawn,
                debt_repaid=po.debt_repaid,
            )
            plan = Plan(
                key=e.key,
                to=m.controller,
                data=self._liquidate_call(m, e.key.account, min_x, frac),
                kind="full" if frac == WAD else "frac",
                expected_reward=po.value,
                fields=fields,
                typical_gas=self.typical_gas,
            )
            by_controller.setdefault(m.controller, []).append((plan, need))
        plans: list[Plan] = []
        for controller, group in by_controller.items():
            m = self.mkts[controller]
            total = sum(need for _, need in group)
            allowance = self.inventory.get(m.stablecoin, Inventory()).allowance.get(controller, 0)
            paying = [p for p, need in group if need > 0]
            if total > allowance and paying:
                # One approval for all of them; a loan that needs no payment (x ≥ d) never waits for it.
                approval = self._approval_plan(m, paying[0].key, self._approval_amount(total))
                for p in paying:
                    p.prerequisite = approval
            plans.extend(p for p, _ in group)
        return plans

    def _threshold(self, market: str) -> int:
        """min_profit for a market (value token 1e18): the market's, the protocol's, else the global one."""
        value = self.min_profit_for(market)
        if value is None:
            value = self.config.min_profit
        if value is None:
            value = self.ctx.config.profit.min_profit
        return to_units(value, 18)

    async def _confirm_callback(self, candidates: list[Evaluation], head: Block) -> tuple[list[Plan], list[Evaluation]]:
        """Callback mode: each loan liquidated through the keeper's liquidator contract, which sells the
        collateral along the market's route in the same transaction. The route is quoted at the head for
        the collateral every candidate fraction yields (one batch per market); the best fraction by
        profit = quoted proceeds + x − d is sent, with min_out = quote × (1 − route_slippage) and the
        contract asserting on-chain that the keeper gains at least min_profit. No inventory, no approval.
        Returns (plans, the candidates no route serves profitably)."""
        assert self.cfg.liquidator is not None  # config validation: callback mode needs it
        slippage = to_units(self.cfg.min_x_slippage, 18)
        min_frac = to_units(self.cfg.min_frac, 18)
        by_market: dict[str, list[tuple[Evaluation, Liquidatable]]] = {}
        rest: list[Evaluation] = []  # candidates no route serves profitably (auto mode: inventory)
        for e in candidates:
            m = self.mkts[e.key.market]
            if not isinstance(e.payload, Liquidatable):
                continue
            if m.controller not in self.cfg.routes:
                if self.cfg.mode == "auto":
                    rest.append(e)
                else:
                    self.log.info("liquidation_no_route", market=m.label, account=e.key.account, note="callback mode: no route")
                continue
            by_market.setdefault(m.controller, []).append((e, e.payload))
        plans: list[Plan] = []
        for controller, group in by_market.items():
            m = self.mkts[controller]
            route = self.cfg.routes[controller]
            hops = route.to_hops()
            fracs = [f for f in CALLBACK_FRACS if f >= min_frac] or [WAD]
            payouts = [[self._payout(m, liq, f) for f in fracs] for _e, liq in group]
            amounts = [po.y_withdrawn for row in payouts for po in row]
            try:
                quotes = await quote_curve(self.ctx.rpc, hops, amounts, head.number)
            except (RouteError, RpcError) as exc:
                self.log.warning("route_quote_failed", market=m.label, error=str(exc))
                rest.extend(e for e, _liq in group)
                continue
            threshold = self._threshold(controller)
            for gi, ((e, _liq), row) in enumerate(zip(group, payouts, strict=True)):
                options = [
                    (po, q, q + po.x_withdrawn - po.debt_repaid)
                    for po, q in zip(row, quotes[gi * len(fracs) : (gi + 1) * len(fracs)], strict=True)
                ]
                po, quote, profit = max(options, key=lambda o: o[2])
                numbers = {
                    "frac": po.frac,
                    "quoted_proceeds": quote,
                    "collateral_sold": po.y_withdrawn,
                    "pay": po.pay,
                    "route_profit": profit,
                    "min_profit": threshold,
                }
                if profit < threshold:
                    self.log.info("liquidation_route_unprofitable", market=m.label, account=e.key.account, **numbers)
                    rest.append(e)
                    continue
                min_out = min_out_for(quote, self.cfg.route_slippage)
                onchain_min = max(threshold, 0)
                data = LIQUIDATOR.fn("liquidate").encode(
                    m.controller,
                    e.key.account,
                    lm.min_x_for(po.x_withdrawn, slippage),
                    po.frac,
                    [h.as_tuple() for h in hops],
                    min_out,
                    onchain_min,
                    0 if m.use_eth_abi else 1,
                )
                plans.append(
                    Plan(
                        key=e.key,
                        to=self.cfg.liquidator,
                        data=data,
                        kind="full" if po.frac == WAD else "frac",
                        expected_reward=profit,
                        fields={
                            **e.fields,
                            **numbers,
                            "mode": "callback",
                            "route": " → ".join(f"{h.kind}:{h.pool[:8]}" for h in hops),
                            "min_out": min_out,
                            "onchain_min_profit": onchain_min,
                            "expected_x": po.x_withdrawn,
                            "debt_repaid": po.debt_repaid,
                        },
                        typical_gas=CALLBACK_GAS,
                    )
                )
        return plans, rest

    def _approval_plan(self, m: Market, key: PositionKey, amount: int) -> Plan:
        return Plan(
            key=key,
            to=m.stablecoin,
            data=ERC20.fn("approve").encode(m.controller, amount),
            kind="approval",
            expected_reward=0,
            fields={"amount": amount},
            step=f"approve:{m.stablecoin}:{m.controller}",
        )

    def setup_plans(self, head: Block) -> list[Plan]:
        """Allowances set ahead of the money (approval modes 'bounded' and 'unlimited'; 'exact' approves per
        block what that block's liquidations need): a controller whose allowance fell below half its target
        while the keeper holds stablecoin is topped up to the target."""
        if self.cfg.approval == "exact" or self.cfg.mode == "callback":  # auto keeps inventory ready
            return []
        out: list[Plan] = []
        for m in self.mkts.values():
            inv = self.inventory.get(m.stablecoin)
            if inv is None or inv.balance <= 0:
                continue
            target = self._approval_amount(0)
            if inv.allowance.get(m.controller, 0) * 2 < target:
                out.append(self._approval_plan(m, PositionKey(self.name, m.controller, self.ctx.keeper), target))
        self._inventory_stale = self._inventory_stale or bool(out)
        return out

    def _approval_amount(self, need: int) -> int:
        if self.cfg.approval == "unlimited":
            return MAX_UINT
        if self.cfg.approval == "bounded":
            return max(need, to_units(self.cfg.approval_amount, 18))
        return need

    async def _pay_for(self, m: Market, user: str, frac: int, head: Block) -> int | None:
        fn = m.abi.fn("tokens_to_liquidate", 2)
        try:
            return fn.decode_one(
                await self.ctx.rpc.eth_call(m.controller, fn.encode(user, frac), sender=self.ctx.keeper, block=head.number)
            )
        except RpcError:
            return None

    # ---- outcomes ----------------------------------------------------------------------------------
    def outcome(self, plan: Plan, receipt: dict) -> Outcome:
        tx_hash = receipt["transactionHash"]
        gas_used = int(receipt["gasUsed"], 16)
        cost = gas_used * int(receipt.get("effectiveGasPrice", "0x0"), 16)
        m = self.mkts[plan.key.market]
        self.dirty.add((plan.key.market, plan.key.account))
        if int(receipt["status"], 16) != 1:
            return Outcome(plan.key, tx_hash, "reverted", plan.kind, 0, gas_used, cost)
        if self.cfg.liquidator is not None and plan.to == self.cfg.liquidator:
            return self._callback_outcome(plan, receipt, tx_hash, gas_used, cost)
        reward, fields = 0, {}
        for lg in receipt.get("logs", []):
            if lg["address"].lower() == m.controller.lower() and lg["topics"] and lg["topics"][0] == LIQUIDATE_EV.topic0:
                ev = LIQUIDATE_EV.decode(lg)
                if ev["user"] == plan.key.account and ev["liquidator"] == self.ctx.keeper:
                    y, x, d = ev["collateral_received"], ev["stablecoin_received"], ev["debt"]
                    value = lm.collateral_value(
                        y, m.price_oracle, to_units(self.cfg.collateral_haircut, 18), m.collateral_precision
                    )
                    reward = value + x - d
                    fields = {
                        "collateral_received": y,
                        "stablecoin_from_bands": x,
                        "debt_repaid": d,
                        "stable_paid": max(d - x, 0),
                    }
        if fields.get("collateral_received"):
            # M1/M2 WETH markets pay `liquidate(user, min_x)` collateral as native ETH: no token Transfer to us
            to_keeper = "0x" + "0" * 24 + self.ctx.keeper[2:].lower()
            token = any(
                lg["address"].lower() == m.collateral.lower()
                and len(lg["topics"]) == 3
                and lg["topics"][0] == TRANSFER_TOPIC
                and lg["topics"][2].lower() == to_keeper
                for lg in receipt.get("logs", [])
            )
            fields["collateral_paid_in"] = "token" if token else "native"
        return Outcome(plan.key, tx_hash, "landed", plan.kind, reward, gas_used, cost, fields)

    def _callback_outcome(self, plan: Plan, receipt: dict, tx_hash: str, gas_used: int, cost: int) -> Outcome:
        """A liquidation through the liquidator contract: the realised gain is its Liquidation event's
        `profit` (the stablecoin the keeper gained in that transaction), next to the route's figures."""
        assert self.cfg.liquidator is not None
        reward, fields = 0, {}
        for lg in receipt.get("logs", []):
            if lg["address"].lower() != self.cfg.liquidator.lower() or not lg["topics"]:
                continue
            if lg["topics"][0] == LIQUIDATION_EV.topic0:
                ev = LIQUIDATION_EV.decode(lg)
                if ev["user"] == plan.key.account:
                    reward = ev["profit"]
                    fields = {
                        "mode": "callback",
                        "collateral_sold": ev["collateral_sold"],
                        "proceeds": ev["proceeds"],
                        "stable_paid": ev["stable_paid"],
                        "frac": ev["frac"],
                        "estimated_proceeds": plan.fields.get("quoted_proceeds"),
                    }
        return Outcome(plan.key, tx_hash, "landed", plan.kind, reward, gas_used, cost, fields)

    async def explain_failure(self, plan: Plan, receipt: dict | None, since_block: int) -> tuple[str, str]:
        self.dirty.add((plan.key.market, plan.key.account))
        to_block = int(receipt["blockNumber"], 16) if receipt else await self.ctx.rpc.block_number()
        topics = [LIQUIDATE_EV.topic0, None, "0x" + "0" * 24 + plan.key.account[2:].lower()]
        logs = await self.ctx.rpc.get_logs(plan.key.market, topics, since_block, to_block)
        others = [LIQUIDATE_EV.decode(lg)["liquidator"] for lg in logs]
        others = [o for o in others if o not in (self.ctx.keeper, self.cfg.liquidator)]
        if others:
            return "raced", f"liquidated first by {others[0]}"
        try:
            await self.ctx.rpc.eth_call(plan.to, plan.data, sender=self.ctx.keeper, block=to_block)
        except RpcError as exc:
            return "reverted", getattr(exc, "reason", "") or exc.message
        return "reverted", "reverted (passes now)"

    def liquidation_log_filter(self) -> tuple[list[str], list[str]] | None:
        return [m.controller for m in self.mkts.values()], [LIQUIDATE_EV.topic0]

    async def liquidations_in(self, logs: list[dict], block: int) -> list[Liquidation]:
        """Controllers' `Liquidate`: the collateral received valued at the AMM's oracle price at `block` less
        the sale haircut, + stablecoin received − debt repaid (as `outcome` reads ours); one made through the
        keeper's liquidator contract (callback mode) is the keeper's, at its Liquidation event's profit."""
        out: list[Liquidation] = []
        profits = [
            LIQUIDATION_EV.decode(lg)["profit"]
            for lg in logs
            if self.cfg.liquidator is not None
            and lg["address"].lower() == self.cfg.liquidator.lower()
            and lg["topics"]
            and lg["topics"][0] == LIQUIDATION_EV.topic0
        ]
        for lg in logs:
            m = self.mkts.get(to_checksum_address(lg["address"]))
            if m is None or not lg["topics"] or lg["topics"][0] != LIQUIDATE_EV.topic0:
                continue
            ev = LIQUIDATE_EV.decode(lg)
            who = ev["liquidator"]
            if self.cfg.liquidator is not None and who == self.cfg.liquidator and profits:
                who, reward = self.ctx.keeper, profits.pop(0)
            else:
                price = AMM.fn("price_oracle").decode_one(
                    await self.ctx.rpc.eth_call(m.amm, AMM.fn("price_oracle").encode(), block=block)
                )
                haircut = to_units(self.cfg.collateral_haircut, 18)
                value = lm.collateral_value(ev["collateral_received"], price, haircut, m.collateral_precision)
                reward = value + ev["stablecoin_received"] - ev["debt"]
            key = PositionKey(self.name, m.controller, ev["user"])
            out.append(Liquidation(key, who, reward, "full", int(lg["logIndex"], 16)))
        return out

    async def rewind(self, block_number: int) -> None:
        self.events.rewind(block_number)
        self.dirty.update(self.loans)

    def closeness(self, e: Evaluation) -> int | None:
        """Full health (1e18; < 0 liquidatable): the scan's sort key."""
        h = e.fields.get("health_full")
        return h if isinstance(h, int) else None


ADAPTER = LlammaAdapter
