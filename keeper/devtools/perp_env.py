"""Deploy the reference Perp v1 contracts on a dev chain and script scenarios against them.

    chain = DevChain(url)
    perp = deploy_perp(chain)                      # ETH at 3,000 and BTC at 60,000, Palmswap parameters
    perp.fund_trader(alice, to_wei_dec("10000"))
    perp.open_position(alice, "ETH", BUY, margin=to_wei_dec("1000"), leverage=to_wei_dec("10"))
    perp.move_spot_price("ETH", to_wei_dec("2880"), whale=bob)
    perp.liquidate(keeper, "ETH", alice)

Units: every amount, price and ratio is an 18-decimal int (1e18 = one token / 1.0 / 100 %),
like the contracts' internal maths; `to_wei_dec("3000")` builds one. USDC balances are in
6-decimal token units (`usdc_balance`). Markets are addressed by name ("ETH") or Amm address.
The owner of everything is `chain.admin`; trades are sent from anvil's unlocked accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from math import isqrt
from typing import Any, Literal

from web3.contract import Contract

from keeper.devtools.chain import DevChain, install_multicall3

WAD = 10**18
USDC_DECIMALS = 6
USDC_UNIT = 10 ** (18 - USDC_DECIMALS)  # 18-decimal wei per USDC token unit
MAX_UINT256 = 2**256 - 1

BUY, SELL = 0, 1  # ClearingHouse Side
ADD_TO_AMM, REMOVE_FROM_AMM = 0, 1  # Amm Dir
SPOT_PRICE, TWAP, ORACLE = 0, 1, 2  # PnlCalcOption

Variant = Literal["v2.3", "v2.2"]
CLEARING_HOUSE_CONTRACT = {"v2.3": "perp/ClearingHouse", "v2.2": "perp/ClearingHouseV22"}


def to_wei_dec(value: str | int | Decimal) -> int:
    """'3000' / '0.0625' / 3000 → exact 18-decimal int (raises if it has more than 18 decimals)."""
    d = Decimal(value) * WAD
    if d != d.to_integral_value():
        raise ValueError(f"{value!r} has more than 18 decimals")
    return int(d)


def from_wei_dec(value: int) -> Decimal:
    """18-decimal int → Decimal (display only)."""
    return Decimal(value) / WAD


def price_feed_key(name: str) -> bytes:
    """bytes32 key of a market, as Perp's formatBytes32String('ETH')."""
    raw = name.encode()
    if len(raw) > 32:
        raise ValueError(f"market name {name!r} longer than 32 bytes")
    return raw.ljust(32, b"\0")


@dataclass(frozen=True)
class MarketSpec:
    """One vAMM market. `price` is both the index price and the initial spot (1e18 quote per base);
    the quote reserve is base_reserve * price, so depth scales with `base_reserve` (1e18 base)."""

    name: str
    price: int
    base_reserve: int
    fluctuation_limit_ratio: int = 0  # 0 = disabled (Palmswap production uses 1.2 %)
    trade_limit_ratio: int = 9 * 10**17  # 90 %
    funding_period: int = 3600  # s
    toll_ratio: int = 0
    spread_ratio: int = 0
    lockout_ratio: int = 0  # extension: 0 = off

    @property
    def quote_reserve(self) -> int:
        return self.base_reserve * self.price // WAD


# ETH: 10,000 ETH x 3,000 = 30M quote deep (a 100k notional moves the price ~0.67 %).
DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("ETH", price=3_000 * WAD, base_reserve=10_000 * WAD),
    MarketSpec("BTC", price=60_000 * WAD, base_reserve=500 * WAD),
)


@dataclass(frozen=True)
class PerpParams:
    """ClearingHouse ratios (1e18 = 100 %); defaults are Palmswap's."""

    init_margin_ratio: int = 10**17  # 10 % → max 10x
    maintenance_margin_ratio: int = 625 * 10**14  # 6.25 %
    liquidation_fee_ratio: int = 25 * 10**15  # 2.5 % (half to the liquidator)
    partial_liquidation_ratio: int = 25 * 10**16  # 25 %
    insurance_fund_balance: int = 1_000_000 * WAD  # USDC seeded into the fund (18-decimal)


@dataclass
class PerpDeployment:
    chain: DevChain
    variant: Variant
    params: PerpParams
    usdc: Contract
    price_feed: Contract
    insurance_fund: Contract
    clearing_house: Contract
    amms: dict[str, Contract]
    price_feed_keys: dict[str, bytes]
    markets: dict[str, MarketSpec]
    multicall3: str
    start_block: int  # block of the first deployment transaction

    # ---- lookups ---------------------------------------------------------------------------
    def amm(self, market: str) -> Contract:
        """Amm by market name or address."""
        if market in self.amms:
            return self.amms[market]
        for c in self.amms.values():
            if c.address.lower() == market.lower():
                return c
        raise KeyError(f"unknown market {market!r}")

    def market_name(self, market: str) -> str:
        a = self.amm(market).address
        return next(n for n, c in self.amms.items() if c.address == a)

    @property
    def addresses(self) -> dict[str, str]:
        out = {
            "usdc": self.usdc.address,
            "price_feed": self.price_feed.address,
            "insurance_fund": self.insurance_fund.address,
            "clearing_house": self.clearing_house.address,
            "multicall3": self.multicall3,
        }
        out.update({f"amm.{n}": c.address for n, c in self.amms.items()})
        return out

    # ---- reads -----------------------------------------------------------------------------
    def position(self, market: str, trader: str) -> dict[str, int]:
        """getPosition as a dict of raw ints (size signed, 1e18)."""
        size, margin, open_notional, cpf, lhi, block = self.clearing_house.functions.getPosition(
            self.amm(market).address, trader
        ).call()
        return {
            "size": size[0],
            "margin": margin[0],
            "open_notional": open_notional[0],
            "last_cpf": cpf[0],
            "liquidity_history_index": lhi,
            "block_number": block,
        }

    def margin_ratio(self, market: str, trader: str) -> int:
        return self.clearing_house.functions.getMarginRatio(self.amm(market).address, trader).call()[0]

    def notional_and_pnl(self, market: str, trader: str, option: int = SPOT_PRICE) -> tuple[int, int]:
        n, p = self.clearing_house.functions.getPositionNotionalAndUnrealizedPnl(self.amm(market).address, trader, option).call()
        return n[0], p[0]

    def spot_price(self, market: str) -> int:
        return self.amm(market).functions.getSpotPrice().call()[0]

    def oracle_price(self, market: str) -> int:
        return self.amm(market).functions.getUnderlyingPrice().call()[0]

    def reserves(self, market: str) -> tuple[int, int]:
        q, b = self.amm(market).functions.getReserve().call()
        return q[0], b[0]

    def usdc_balance(self, account: str) -> int:
        """Balance in USDC token units (6 decimals)."""
        return self.usdc.functions.balanceOf(account).call()

    # ---- admin -----------------------------------------------------------------------------
    def _admin(self, call: Any) -> Any:
        return self.chain.tx(call, sender=self.chain.admin)

    def set_oracle_price(self, market: str, price: int) -> Any:
        """Set the index price (1e18 quote per base) of a market."""
        key = self.price_feed_keys[self.market_name(market)]
        return self._admin(self.price_feed.functions.setPrice(key, price))

    def set_backstop(self, account: str, allowed: bool = True) -> Any:
        return self._admin(self.clearing_house.functions.setBackstopLiquidityProvider(account, allowed))

    def set_lockout(self, market: str, ratio: int) -> Any:
        """Extension: lockout threshold (1e18 = 100 %, 5 % = 5 * 10**16); 0 turns it off."""
        return self._admin(self.clearing_house.functions.setLockoutRatio(self.amm(market).address, ratio))

    def set_fluctuation_limit(self, market: str, ratio: int) -> Any:
        return self._admin(self.amm(market).functions.setFluctuationLimitRatio((ratio,)))

    def set_partial_liquidation_ratio(self, ratio: int) -> Any:
        return self._admin(self.clearing_house.functions.setPartialLiquidationRatio((ratio,)))

    def mint_usdc(self, account: str, amount: int) -> Any:
        """Mint an 18-decimal amount of USDC (rounded down to token units)."""
        return self._admin(self.usdc.functions.mint(account, amount // USDC_UNIT))

    # ---- scenario actions ------------------------------------------------------------------
    def fund_trader(self, trader: str, amount: int) -> None:
        """Give `trader` an 18-decimal amount of USDC and approve the ClearingHouse for all of it."""
        self.mint_usdc(trader, amount)
        # read on-chain (not cached): tests revert the chain between scenarios
        if self.usdc.functions.allowance(trader, self.clearing_house.address).call() != MAX_UINT256:
            self.chain.tx(self.usdc.functions.approve(self.clearing_house.address, MAX_UINT256), sender=trader)

    def open_position(self, trader: str, market: str, side: int, margin: int, leverage: int, base_limit: int = 0) -> Any:
        """openPosition(amm, side, margin, leverage, base_limit); margin in quote, leverage 1e18 = 1x."""
        fn = self.clearing_house.functions.openPosition(self.amm(market).address, side, (margin,), (leverage,), (base_limit,))
        return self.chain.tx(fn, sender=trader)

    def close_position(self, trader: str, market: str, quote_limit: int = 0) -> Any:
        return self.chain.tx(self.clearing_house.functions.closePosition(self.amm(market).address, (quote_limit,)), sender=trader)

    def add_margin(self, trader: str, market: str, amount: int) -> Any:
        return self.chain.tx(self.clearing_house.functions.addMargin(self.amm(market).address, (amount,)), sender=trader)

    def remove_margin(self, trader: str, market: str, amount: int) -> Any:
        return self.chain.tx(self.clearing_house.functions.removeMargin(self.amm(market).address, (amount,)), sender=trader)

    def liquidate(self, liquidator: str, market: str, trader: str, gas: int | None = None) -> Any:
        return self.chain.tx(
            self.clearing_house.functions.liquidate(self.amm(market).address, trader), sender=liquidator, gas=gas
        )

    def pay_funding(self, market: str, sender: str | None = None) -> Any:
        return self.chain.tx(self.clearing_house.functions.payFunding(self.amm(market).address), sender=sender)

    def move_spot_price(self, market: str, target_price: int, whale: str, max_rounds: int = 3) -> list[Any]:
        """Trade as `whale` (1x leverage, funded automatically) until the vAMM spot is within
        1e-9 of `target_price` (1e18). Needs the fluctuation limit off (or wide enough) and no
        lockout blocking the whale's side. Returns the receipts."""
        receipts = []
        for _ in range(max_rounds):
            q, b = self.reserves(market)
            spot = q * WAD // b
            if abs(spot - target_price) * 10**9 <= target_price:
                break
            # spot after adding/removing quote at k = q*b: (q')^2 / k, so q' = sqrt(target * k)
            k = q * b // WAD
            q_after = isqrt(target_price * k)
            side, quote = (BUY, q_after - q) if q_after > q else (SELL, q - q_after)
            quote -= quote % USDC_UNIT  # whole USDC units, as the vault pulls them
            if quote == 0:
                break
            self.fund_trader(whale, quote + WAD)
            receipts.append(self.open_position(whale, market, side, quote, WAD))
        return receipts

    def advance_twap(self, seconds: int = 900) -> None:
        """Let `seconds` pass in one mined block (900 s makes the 15-minute TWAP equal the spot)."""
        self.chain.advance(seconds)


def deploy_perp(
    chain: DevChain,
    markets: tuple[MarketSpec, ...] | list[MarketSpec] = DEFAULT_MARKETS,
    params: PerpParams | None = None,
    variant: Variant = "v2.3",
    warmup_seconds: int = 3600,
) -> PerpDeployment:
    """Deploy USDC (6 decimals), PriceFeed, InsuranceFund, the ClearingHouse `variant` and one
    open Amm per market, wire them, seed the insurance fund, install Multicall3 at its canonical
    address, then let `warmup_seconds` pass so every market has TWAP history (anvil may stamp
    consecutive blocks with the same second, which a TWAP over zero elapsed time cannot divide)."""
    params = params or PerpParams()
    if variant not in CLEARING_HOUSE_CONTRACT:
        raise ValueError(f"unknown variant {variant!r}: expected one of {sorted(CLEARING_HOUSE_CONTRACT)}")
    admin = chain.admin
    start_block = chain.block_number() + 1
    multicall3 = install_multicall3(chain)

    usdc = chain.deploy("common/ERC20", "USD Coin", "USDC", USDC_DECIMALS)
    price_feed = chain.deploy("perp/PriceFeed")
    insurance_fund = chain.deploy("perp/InsuranceFund")
    clearing_house = chain.deploy(
        CLEARING_HOUSE_CONTRACT[variant],
        params.init_margin_ratio,
        params.maintenance_margin_ratio,
        params.liquidation_fee_ratio,
        insurance_fund.address,
    )
    chain.tx(clearing_house.functions.setPartialLiquidationRatio((params.partial_liquidation_ratio,)), sender=admin)
    chain.tx(insurance_fund.functions.setClearingHouse(clearing_house.address), sender=admin)

    amms: dict[str, Contract] = {}
    keys: dict[str, bytes] = {}
    for spec in markets:
        key = price_feed_key(spec.name)
        chain.tx(price_feed.functions.setPrice(key, spec.price), sender=admin)
        amm = chain.deploy(
            "perp/Amm",
            spec.quote_reserve,
            spec.base_reserve,
            spec.trade_limit_ratio,
            spec.funding_period,
            price_feed.address,
            key,
            usdc.address,
            spec.fluctuation_limit_ratio,
            spec.toll_ratio,
            spec.spread_ratio,
        )
        chain.tx(amm.functions.setCounterParty(clearing_house.address), sender=admin)
        chain.tx(amm.functions.setOpen(True), sender=admin)
        chain.tx(insurance_fund.functions.addAmm(amm.address), sender=admin)
        if spec.lockout_ratio:
            chain.tx(clearing_house.functions.setLockoutRatio(amm.address, spec.lockout_ratio), sender=admin)
        amms[spec.name] = amm
        keys[spec.name] = key

    if params.insurance_fund_balance:
        chain.tx(usdc.functions.mint(insurance_fund.address, params.insurance_fund_balance // USDC_UNIT), sender=admin)
    if warmup_seconds:
        chain.advance(warmup_seconds)

    return PerpDeployment(
        chain=chain,
        variant=variant,
        params=params,
        usdc=usdc,
        price_feed=price_feed,
        insurance_fund=insurance_fund,
        clearing_house=clearing_house,
        amms=amms,
        price_feed_keys=keys,
        markets={s.name: s for s in markets},
        multicall3=multicall3,
        start_block=start_block,
    )
