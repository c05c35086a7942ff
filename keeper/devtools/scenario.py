"""The reference world that `keeper demo` and `keeper sandbox` build, and market moves "as arbitrage would".

    chain = DevChain(url)                                   # an anvil started with accounts=WORLD_ACCOUNTS
    world = build_world(chain, keeper=address)              # Perp v1 (ETH, BTC) + 30 positions, LLAMMA + 15 loans
    move_market(chain, world.perp, "ETH", Decimal("-8"), whale=world.whale)       # index and vAMM −8 %
    move_market(chain, world.crv, "ETH", Decimal("-8"), whale=world.arbitrageur)  # oracle −8 %, bands arbitraged

The world: the reference Perp v1 ClearingHouse (Palmswap parameters) with the ETH (3,000) and BTC
(60,000) vAMMs and the 30 positions of BOOK (longs and shorts, 2x–10x), and a crvUSD-style LLAMMA
market (ControllerM2, ETH collateral at 3,000) with 15 loans of 4–11 bands at 80–94 % of their
max_borrowable; the keeper address gets a crvUSD inventory for hard liquidations. Accounts are
anvil's unlocked test accounts: traders 10–39, the whale 40, borrowers 41–55, the arbitrageur 57.

`move_market` is the scripted equivalent of an oracle update followed by arbitrage:
- Perp v1: the index price (PriceFeed) is set, a whale trades the vAMM spot to it (1x, funded by
  minting USDC) and `twap_seconds` pass in one block so the 15-minute TWAP catches up (the
  ClearingHouse's margin ratio takes the better of spot and TWAP PnL: without it a long hit by a
  fall would not be liquidatable yet).
- LLAMMA: the oracle moves geometrically in `steps` steps and after each one an arbitrageur trades
  the AMM back to the oracle price (converting the bands it crossed: soft liquidation on a fall).
The oracle is set through the deployment's admin setter, or through `set_oracle` (a fork that
impersonates the real updater or writes its storage).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

from keeper.devtools.chain import DevChain
from keeper.devtools.llamma_env import LlammaDeployment, arbitrage, deploy_llamma
from keeper.devtools.perp_env import BUY, SELL, MarketSpec, PerpDeployment, PerpParams, deploy_perp, price_feed_key

E = 10**18
WORLD_ACCOUNTS = 60  # anvil --accounts: the world uses the unlocked accounts 10–57
KEEPER_CRVUSD = 500_000  # crvUSD given to the keeper for hard liquidations

# (market, side, margin USDC, leverage): longs and shorts of every leverage in two markets.
BOOK: list[tuple[str, int, int, int]] = [
    ("ETH", BUY, 300, 10),
    ("ETH", BUY, 450, 9),
    ("ETH", BUY, 700, 8),
    ("ETH", BUY, 900, 7),
    ("ETH", BUY, 1200, 6),
    ("ETH", BUY, 1500, 5),
    ("ETH", BUY, 2000, 3),
    ("ETH", BUY, 3000, 2),
    ("ETH", BUY, 250, 10),
    ("ETH", BUY, 600, 9),
    ("ETH", SELL, 400, 10),
    ("ETH", SELL, 800, 6),
    ("ETH", SELL, 1500, 4),
    ("ETH", SELL, 2500, 2),
    ("ETH", BUY, 1000, 10),
    ("ETH", BUY, 800, 10),
    ("BTC", BUY, 500, 10),
    ("BTC", BUY, 900, 9),
    ("BTC", BUY, 1300, 8),
    ("BTC", BUY, 2000, 6),
    ("BTC", BUY, 3000, 4),
    ("BTC", BUY, 4000, 2),
    ("BTC", BUY, 700, 10),
    ("BTC", BUY, 1100, 9),
    ("BTC", SELL, 600, 10),
    ("BTC", SELL, 1200, 7),
    ("BTC", SELL, 2000, 5),
    ("BTC", SELL, 3500, 2),
    ("BTC", BUY, 1500, 10),
    ("BTC", SELL, 900, 3),
]
N_LOANS = 15


@dataclass
class World:
    chain: DevChain
    perp: PerpDeployment
    crv: LlammaDeployment
    traders: list[str]
    whale: str
    borrowers: list[str]
    arbitrageur: str
    book: list[tuple[str, str]] = field(default_factory=list)  # (market, trader) of every position opened


def world_accounts(chain: DevChain) -> dict[str, Any]:
    accounts: list[str] = list(chain.w3.eth.accounts)
    if len(accounts) < WORLD_ACCOUNTS:
        raise RuntimeError(f"the world needs an anvil with --accounts {WORLD_ACCOUNTS} (this one has {len(accounts)})")
    return {
        "traders": accounts[10:40],
        "whale": accounts[40],
        "borrowers": accounts[41 : 41 + N_LOANS],
        "arbitrageur": accounts[57],
    }


def populate_world(chain: DevChain, perp: PerpDeployment, keeper: str, keeper_crvusd: int = KEEPER_CRVUSD) -> World:
    """Open BOOK's positions on a deployed `perp`, deploy the LLAMMA market (M2) with its 15 loans and
    give `keeper` its crvUSD inventory (`keeper_crvusd` units; 0 for a keeper in callback mode)."""
    acc = world_accounts(chain)
    book: list[tuple[str, str]] = []
    for (market, side, margin, lev), trader in zip(BOOK, acc["traders"], strict=True):
        perp.fund_trader(trader, margin * E + E)
        perp.open_position(trader, market, side, margin * E, lev * E)
        book.append((market, trader))
    crv = deploy_llamma(chain, variant="m2")
    for i, u in enumerate(acc["borrowers"]):
        n, col = 4 + i % 8, crv.units(5 + i)
        crv.create_loan(u, col, crv.max_borrowable(col, n) * (80 + i) // 100, n)
    if keeper_crvusd:
        crv.fund_stablecoin(keeper, crv.usd(keeper_crvusd))
    return World(chain, perp, crv, acc["traders"], acc["whale"], acc["borrowers"], acc["arbitrageur"], book)


def build_world(chain: DevChain, keeper: str) -> World:
    return populate_world(chain, deploy_perp(chain), keeper)


def keeper_protocols(perp: PerpDeployment, crv: LlammaDeployment, start_block: int) -> list[dict[str, Any]]:
    """The [[protocols]] tables of a keeper config watching the world."""
    return protocols_config(perp.clearing_house.address, crv.factory.address, start_block)


def protocols_config(clearing_house: str, factory: str, start_block: int) -> list[dict[str, Any]]:
    return [
        {"kind": "perp_v1", "name": "palmswap", "clearing_house": clearing_house, "start_block": start_block},
        {"kind": "llamma", "name": "crvusd", "factory": factory, "start_block": start_block},
    ]


# ---- addresses ↔ deployments (the sandbox's sandbox.json) -----------------------------------------


def perp_info(perp: PerpDeployment) -> dict[str, Any]:
    return {
        "variant": perp.variant,
        "clearing_house": perp.clearing_house.address,
        "usdc": perp.usdc.address,
        "price_feed": perp.price_feed.address,
        "insurance_fund": perp.insurance_fund.address,
        "multicall3": perp.multicall3,
        "amms": {n: c.address for n, c in perp.amms.items()},
        "start_block": perp.start_block,
    }


def attach_perp(chain: DevChain, info: dict[str, Any]) -> PerpDeployment:
    """A PerpDeployment over reference contracts already on `chain` (addresses as perp_info gives them)."""
    from keeper.devtools.perp_env import CLEARING_HOUSE_CONTRACT  # noqa: PLC0415

    amms = {n: chain.at("perp/Amm", a) for n, a in info["amms"].items()}
    keys = {n: price_feed_key(n) for n in amms}
    markets = {}
    for n, amm in amms.items():
        _q, b = amm.functions.getReserve().call()
        markets[n] = MarketSpec(n, price=amm.functions.getUnderlyingPrice().call()[0], base_reserve=b[0])
    return PerpDeployment(
        chain=chain,
        variant=info.get("variant", "v2.3"),
        params=PerpParams(),
        usdc=chain.at("common/ERC20", info["usdc"]),
        price_feed=chain.at("perp/PriceFeed", info["price_feed"]),
        insurance_fund=chain.at("perp/InsuranceFund", info["insurance_fund"]),
        clearing_house=chain.at(CLEARING_HOUSE_CONTRACT[info.get("variant", "v2.3")], info["clearing_house"]),
        amms=amms,
        price_feed_keys=keys,
        markets=markets,
        multicall3=info.get("multicall3", ""),
        start_block=int(info.get("start_block", 0)),
    )


def llamma_info(crv: LlammaDeployment, name: str = "ETH") -> dict[str, Any]:
    return {
        "variant": crv.variant,
        "factory": crv.factory.address,
        "factory_kind": crv.factory_kind,
        "stablecoin": crv.stablecoin.address,
        "weth": crv.weth.address if crv.weth is not None else None,
        "markets": {
            name: {
                "controller": crv.controller.address,
                "amm": crv.amm.address,
                "oracle": crv.oracle.address,
                "collateral": crv.collateral.address,
            }
        },
    }


def attach_llamma(chain: DevChain, info: dict[str, Any], market: str) -> LlammaDeployment:
    """A LlammaDeployment over one market of reference contracts already on `chain` (llamma_info's shape)."""
    from keeper.devtools.llamma_env import CONTROLLER_CONTRACT  # noqa: PLC0415

    m = info["markets"][market]
    variant = info.get("variant", "m2")
    kind = info.get("factory_kind", "mint")
    stable = chain.at("common/ERC20", info["stablecoin"])
    collateral = chain.at("common/ERC20", m["collateral"])
    weth = chain.at("llamma/WETH", info["weth"]) if info.get("weth") else None
    return LlammaDeployment(
        chain=chain,
        variant=variant,
        stablecoin=stable,
        collateral=collateral,
        oracle=chain.at("llamma/PriceOracle", m["oracle"]),
        amm=chain.at("llamma/AMM", m["amm"]),
        controller=chain.at(CONTROLLER_CONTRACT[variant], m["controller"]),
        factory=chain.at("llamma/ControllerFactory" if kind == "mint" else "llamma/LendingFactory", info["factory"]),
        factory_kind=kind,
        weth=weth,
        collateral_decimals=collateral.functions.decimals().call(),
        borrowed_decimals=stable.functions.decimals().call(),
    )


# ---- moving a market as arbitrage would ------------------------------------------------------------


def parse_pct(text: str) -> Decimal:
    """'-8%' / '+5%' / '-8' / '-0.5%' → Decimal percent (-8); ValueError unless > -100 and ≤ 1000."""
    raw = text.strip()
    raw = raw[:-1] if raw.endswith("%") else raw
    try:
        pct = Decimal(raw.replace("−", "-"))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a percentage (e.g. -8% or +5%)") from None
    if not pct.is_finite() or pct <= -100 or pct > 1000:
        raise ValueError(f"{text!r} is out of range (more than -100 % and at most +1000 %)")
    return pct


def scaled(price: int, pct: Decimal) -> int:
    """`price` (1e18) changed by `pct` percent, rounded down, at least 1."""
    with localcontext() as ctx:
        ctx.prec = 80
        return max(1, int(Decimal(price) * (Decimal(100) + pct) / Decimal(100)))


@dataclass(frozen=True)
class Move:
    protocol: str  # "perp" | "llamma"
    market: str
    oracle_before: int  # 1e18
    oracle_after: int
    market_before: int  # vAMM spot / LLAMMA AMM price (get_p)
    market_after: int
    txs: int  # transactions sent


def _perp_move(
    chain: DevChain,
    perp: PerpDeployment,
    market: str,
    pct: Decimal,
    whale: str,
    set_oracle: Callable[[int], None] | None,
    twap_seconds: int,
) -> Move:
    before, spot0 = perp.oracle_price(market), perp.spot_price(market)
    target = scaled(before, pct)
    if set_oracle is not None:
        set_oracle(target)
    else:
        perp.set_oracle_price(market, target)
    receipts = perp.move_spot_price(market, target, whale)
    if twap_seconds:
        chain.advance(twap_seconds)
    return Move("perp", market, before, perp.oracle_price(market), spot0, perp.spot_price(market), 1 + 2 * len(receipts))


def _llamma_move(
    m: LlammaDeployment,
    market: str,
    pct: Decimal,
    arbitrageur: str,
    set_oracle: Callable[[int], None] | None,
    steps: int | None,
) -> Move:
    before, p0 = m.oracle_price(), m.amm.functions.get_p().call()
    target = scaled(before, pct)
    if steps is None:  # about one oracle update per 2 % of move, as a follower of the price would see it
        steps = max(1, math.ceil(abs(pct) / 2))
    setter: Callable[[int], None] = set_oracle if set_oracle is not None else m.set_oracle_price
    ratio = Decimal(target) / Decimal(before)
    txs = 0
    for k in range(1, steps + 1):
        with localcontext() as ctx:
            ctx.prec = 80
            price = target if k == steps else int(Decimal(before) * ratio ** (Decimal(k) / Decimal(steps)))
        setter(price)
        txs += 1
        if arbitrage(m, arbitrageur) is not None:
            txs += 1
    return Move("llamma", market, before, m.oracle_price(), p0, m.amm.functions.get_p().call(), txs)


def move_market(
    chain: DevChain,
    deployment: PerpDeployment | LlammaDeployment,
    market: str,
    pct: Decimal,
    whale: str,
    *,
    steps: int | None = None,
    twap_seconds: int = 900,
    set_oracle: Callable[[int], None] | None = None,
) -> Move:
    """Move one market's oracle by `pct` percent (Decimal, -8 = −8 %) and its market price after it, as
    arbitrage would (module docstring). `market`: the perp market name ("ETH") or, for a LLAMMA
    deployment, only a label. `whale` trades the vAMM / arbitrages the AMM (funded by minting as needed).
    `steps` (LLAMMA): oracle updates, each followed by arbitrage (default: one per 2 %). `twap_seconds`
    (perp): time passed in one block afterwards (0: none). `set_oracle(price)`: how the oracle is set
    (default: the reference contracts' admin setter)."""
    if isinstance(deployment, PerpDeployment):
        return _perp_move(chain, deployment, market, pct, whale, set_oracle, twap_seconds)
    if steps is not None and steps < 1:
        raise ValueError("steps must be ≥ 1")
    return _llamma_move(deployment, market, pct, whale, set_oracle, steps)
