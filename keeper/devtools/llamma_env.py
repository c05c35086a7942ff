"""Deploy the reference crvUSD / LlamaLend (LLAMMA) contracts on a dev chain and script scenarios.

    chain = DevChain(url)
    m = deploy_llamma(chain, variant="v3", collateral_decimals=8)   # WBTC-like market at 3,000
    alice = chain.accounts[1]
    debt = m.max_borrowable(m.units(10), 10)                      # 10 collateral tokens, 10 bands
    m.create_loan(alice, m.units(10), debt, 10)
    lower_price_in_steps(m, m.oracle_price() * 90 // 100, steps=10, arbitrageur=chain.accounts[9])
    m.controller.functions.health(alice, True).call()

Units: every amount is an int in the token's native units (`m.units("1.5")` = 1.5 collateral
tokens, `m.usd(100)` = 100 borrowed tokens); prices, discounts and fees are 18-decimal ints
(3000 * 10**18 = 3,000 borrowed per collateral; 6 * 10**16 = 6 %).

Soft liquidation is driven like on mainnet: move the oracle (`set_oracle_price`) and let an
arbitrageur trade the AMM back to the oracle price (`arbitrage`), which converts the bands the
price crossed. Hard liquidations come from interest (`accrue_interest`) or from price moves
that arbitrage does not follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from eth_utils import to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD

from keeper.devtools.chain import DevChain, install_multicall3

WAD = 10**18
MAX_UINT256 = 2**256 - 1

Variant = Literal["m2", "l0-7", "l8", "l9-10", "v3"]
Compiler = Literal["0.4", "0.3.10"]
# ABI variant → reference controller (Vyper 0.4.x). See contracts/llamma/Controller*.vy and
# docs/PROTOCOLS.md §B.0 and §V: M1/M2 (0.3.7), LlamaLend markets 0-7 / 8 / 9-10, V3.
CONTROLLER_CONTRACT = {
    "m2": "llamma/ControllerM2",
    "l0-7": "llamma/ControllerL0",
    "l8": "llamma/ControllerL8",
    "l9-10": "llamma/ControllerL9",
    "v3": "llamma/ControllerV3",
}
VARIANTS: tuple[Variant, ...] = ("m2", "l0-7", "l8", "l9-10", "v3")
COMPILERS: tuple[Compiler, ...] = ("0.4", "0.3.10")


def shell_contract(variant: Variant) -> str:
    """The Vyper 0.3.10 dispatcher shell of a variant (same ABI; DELEGATECALLs the 0.4.x controller)."""
    return CONTROLLER_CONTRACT[variant].replace("llamma/", "llamma/v0_3_10/")


def to_units(amount: str | int | Decimal, decimals: int) -> int:
    """'1.5' with 8 decimals → 150000000 (exact; raises if `amount` has more decimals)."""
    d = Decimal(str(amount)) * (10**decimals)
    if d != d.to_integral_value():
        raise ValueError(f"{amount!r} has more than {decimals} decimals")
    return int(d)


def _as_int(value: int | float) -> int:
    """Accept 3000e18-style floats only when they are exact integers."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        as_int = int(value)
        if float(as_int) != value:
            raise ValueError(f"{value!r} is not exact")
        return as_int
    return int(value)


@dataclass
class LlammaDeployment:
    """One deployed market and the handles tests and the demo need."""

    chain: DevChain
    variant: Variant
    stablecoin: Contract  # coins(0): the borrowed token (crvUSD for mint markets)
    collateral: Contract  # coins(1): ERC20 (mintable by chain.admin) or WETH9
    oracle: Contract
    amm: Contract
    controller: Contract
    factory: Contract
    factory_kind: Literal["mint", "lending"]
    weth: Contract | None  # the factory's / market's WETH9 (None for lending markets)
    collateral_decimals: int
    borrowed_decimals: int
    compiler: Compiler = "0.4"
    logic: Contract | None = None  # with compiler "0.3.10": the 0.4.x controller the shell delegates to

    # ---- units ---------------------------------------------------------------------------
    @property
    def collateral_is_weth(self) -> bool:
        return self.weth is not None and self.weth.address == self.collateral.address

    def units(self, amount: str | int | Decimal) -> int:
        """Human collateral amount → native collateral units."""
        return to_units(amount, self.collateral_decimals)

    def usd(self, amount: str | int | Decimal) -> int:
        """Human borrowed-token amount → native borrowed units."""
        return to_units(amount, self.borrowed_decimals)

    # ---- funding -------------------------------------------------------------------------
    def _tx(self, call: Any, sender: str | None = None, value: int = 0) -> Any:
        return self.chain.tx(call, sender=sender or self.chain.admin, value=value)

    def fund_collateral(self, user: str, amount: int) -> None:
        """Give `user` (any address) `amount` collateral: mint, or for WETH wrap the admin's ETH and transfer it."""
        if self.collateral_is_weth:
            admin = self.chain.admin
            balance = self.chain.w3.eth.get_balance(to_checksum_address(admin))
            if balance < amount + 10**18:  # keep gas money
                self.chain.set_balance(admin, balance + amount + 10**18)
            self._tx(self.collateral.functions.deposit(), value=amount)
            self._tx(self.collateral.functions.transfer(user, amount))
        else:
            self._tx(self.collateral.functions.mint(user, amount))

    def fund_stablecoin(self, user: str, amount: int) -> None:
        """Mint `amount` borrowed tokens to `user`."""
        self._tx(self.stablecoin.functions.mint(user, amount))

    def approve_all(self, user: str, spender: str | None = None) -> None:
        """Unlimited approvals of both tokens from `user` to `spender` (default: the Controller)."""
        spender = spender or self.controller.address
        for token in (self.stablecoin, self.collateral):
            if token.functions.allowance(user, spender).call() != MAX_UINT256:
                self._tx(token.functions.approve(spender, MAX_UINT256), sender=user)

    # ---- loans ---------------------------------------------------------------------------
    def max_borrowable(self, collateral: int, n_bands: int) -> int:
        return self.controller.functions.max_borrowable(collateral, n_bands).call()

    def create_loan(self, user: str, collateral: int, debt: int, n_bands: int, *, fund: bool = True) -> Any:
        """Fund (unless fund=False) and approve `user`, then create_loan. Returns the receipt."""
        if fund:
            self.fund_collateral(user, collateral)
        self.approve_all(user)
        return self._tx(self.controller.functions.create_loan(collateral, debt, n_bands), sender=user)

    def create_max_loan(self, user: str, collateral: int, n_bands: int, ltv_fraction: int = WAD) -> int:
        """Borrow `ltv_fraction` (1e18 = 100 %) of max_borrowable; returns the debt taken."""
        debt = self.max_borrowable(collateral, n_bands) * ltv_fraction // WAD
        self.create_loan(user, collateral, debt, n_bands)
        return debt

    def user_bands(self, user: str) -> tuple[int, int]:
        n1, n2 = self.amm.functions.read_user_tick_numbers(user).call()
        return n1, n2

    def health(self, user: str, full: bool = False) -> int:
        return self.controller.functions.health(user, full).call()

    # ---- prices and time -----------------------------------------------------------------
    def oracle_price(self) -> int:
        return self.oracle.functions.price().call()

    def set_oracle_price(self, price: int) -> None:
        self._tx(self.oracle.functions.set_price(_as_int(price)))

    def accrue_interest(self, rate: int, seconds: int) -> None:
        """Set the borrow rate (1e18 = 100 %/s), let `seconds` pass (one block), then set the rate back to 0."""
        self._tx(self.controller.functions.set_borrow_rate(rate))
        self.chain.advance(seconds)
        self._tx(self.controller.functions.set_borrow_rate(0))

    # ---- scenario shortcuts ---------------------------------------------------------------
    def arbitrage(self, arbitrageur: str) -> tuple[int, int, int] | None:
        return arbitrage(self, arbitrageur)

    def lower_price_in_steps(self, target: int, steps: int, arbitrageur: str) -> list[int]:
        return lower_price_in_steps(self, target, steps, arbitrageur)


def arbitrage(deployment: LlammaDeployment, arbitrageur: str) -> tuple[int, int, int] | None:
    """Trade the AMM to the oracle price (AMM.get_amount_for_price), funding `arbitrageur` as needed.

    Buying collateral (coin 0 in) converts bands to the borrowed token: that is soft liquidation
    when the oracle fell; selling collateral converts them back. Returns (i, in_amount, out_amount)
    of the trade, or None if the AMM is already at the oracle price / there is nothing to trade.
    """
    m = deployment
    amm = m.amm
    p_o = amm.functions.price_oracle().call()
    amount, pump = amm.functions.get_amount_for_price(p_o).call()
    if amount == 0:
        return None
    i, j = (0, 1) if pump else (1, 0)
    _used, out = amm.functions.get_dxdy(i, j, amount).call()
    if out == 0:
        return None
    token = m.stablecoin if pump else m.collateral
    have = token.functions.balanceOf(arbitrageur).call()
    if have < amount:
        if pump:
            m.fund_stablecoin(arbitrageur, amount - have)
        else:
            m.fund_collateral(arbitrageur, amount - have)
    if token.functions.allowance(arbitrageur, amm.address).call() < amount:
        m._tx(token.functions.approve(amm.address, MAX_UINT256), sender=arbitrageur)
    receipt = m._tx(amm.functions.exchange(i, j, amount, 0), sender=arbitrageur)
    ev = amm.events.TokenExchange().process_receipt(receipt, errors=DISCARD)
    if not ev:
        return None
    return i, ev[0]["args"]["tokens_sold"], ev[0]["args"]["tokens_bought"]


def lower_price_in_steps(deployment: LlammaDeployment, target: int, steps: int, arbitrageur: str) -> list[int]:
    """Move the oracle geometrically from its current price to `target` in `steps` steps, arbitraging
    the AMM after each one. Works upwards too. Returns the active band after each step."""
    m = deployment
    start = m.oracle_price()
    target = _as_int(target)
    bands: list[int] = []
    ratio = Decimal(target) / Decimal(start)
    for k in range(1, steps + 1):
        price = target if k == steps else int(Decimal(start) * ratio ** (Decimal(k) / Decimal(steps)))
        m.set_oracle_price(price)
        arbitrage(m, arbitrageur)
        bands.append(m.amm.functions.active_band().call())
    return bands


def deploy_llamma(
    chain: DevChain,
    variant: Variant = "m2",
    collateral_decimals: int = 18,
    A: int = 100,
    price: int | float = 3000 * 10**18,
    loan_discount: int | float = 9 * 10**16,
    liquidation_discount: int | float = 6 * 10**16,
    fee: int | float = 6 * 10**15,
    *,
    base_price: int | None = None,
    weth_collateral: bool = False,
    factory_kind: Literal["mint", "lending"] | None = None,
    factory: Contract | None = None,
    stablecoin: Contract | None = None,
    borrowed_decimals: int = 18,
    liquidity: int | None = None,
    multicall: bool = True,
    compiler: Compiler = "0.4",
) -> LlammaDeployment:
    """Deploy one market: tokens, settable oracle, AMM, Controller (ABI `variant`), registered in a
    factory, with `liquidity` borrowed tokens (default 10 million) minted to the Controller.

    variant: "m2" (use_eth overloads, no borrowed_token), "l0-7" (M2 ABI + borrowed_token, 0.3.10
    debt rounding), "l8" (5-argument liquidate_extended, no use_eth), "l9-10" (adds the bytes
    overloads) or "v3" (bytes callback, approvals, d rounded up).
    compiler: "0.4" deploys the reference controller itself; "0.3.10" deploys it as the logic and
    puts a Vyper 0.3.10 dispatcher shell with the same ABI in front of it (`controller` is the
    shell, with the controller's ABI; `logic` the 0.4 contract).
    weth_collateral: the collateral is the factory's WETH9, so M2 pays liquidators native ETH.
    factory_kind: "mint" (ControllerFactory, crvUSD-style; default for m2) or "lending"
    (LendingFactory; default for the others). Pass `factory` (and `stablecoin`) to add a market to an
    existing deployment. `base_price` (default: `price`) is p_oracle_up(0).
    The admin of everything is chain.admin, which is also the minter of the test tokens.
    """
    if variant not in CONTROLLER_CONTRACT:
        raise ValueError(f"unknown variant {variant!r}")
    if compiler not in COMPILERS:
        raise ValueError(f"unknown compiler {compiler!r}")
    price = _as_int(price)
    kind = factory_kind or ("mint" if variant == "m2" else "lending")
    if weth_collateral:
        if kind != "mint":
            raise ValueError("a WETH collateral market needs the mint factory (it provides WETH())")
        collateral_decimals = 18
    if multicall:
        install_multicall3(chain)

    if stablecoin is None:
        name, symbol = ("Curve.Fi USD Stablecoin", "crvUSD") if kind == "mint" else ("Borrowed Token", "BRW")
        stablecoin = chain.deploy("common/ERC20", name, symbol, borrowed_decimals)
    borrowed_decimals = stablecoin.functions.decimals().call()

    weth: Contract | None = None
    if factory is None:
        if kind == "mint":
            weth = chain.deploy("llamma/WETH")
            factory = chain.deploy("llamma/ControllerFactory", stablecoin.address, weth.address)
        else:
            factory = chain.deploy("llamma/LendingFactory")
    elif kind == "mint":
        weth = chain.at("llamma/WETH", factory.functions.WETH().call())

    if weth_collateral:
        assert weth is not None
        collateral = weth
    else:
        symbol = "WETH" if collateral_decimals == 18 else "WBTC"
        collateral = chain.deploy("common/ERC20", f"Test {symbol}", symbol, collateral_decimals)

    oracle = chain.deploy("llamma/PriceOracle", price)
    amm = chain.deploy(
        "llamma/AMM",
        stablecoin.address,
        10 ** (18 - borrowed_decimals),
        collateral.address,
        10 ** (18 - collateral_decimals),
        A,
        base_price if base_price is not None else price,
        _as_int(fee),
        oracle.address,
    )
    # M2's constructor also takes the factory's WETH (for the native-ETH payout); V3's does not.
    weth_arg = [weth.address if weth is not None else "0x" + "00" * 20] if variant == "m2" else []
    controller = chain.deploy(
        CONTROLLER_CONTRACT[variant],
        collateral.address,
        stablecoin.address,
        amm.address,
        factory.address,
        *weth_arg,
        _as_int(loan_discount),
        _as_int(liquidation_discount),
    )
    logic: Contract | None = None
    if compiler == "0.3.10":
        logic = controller
        shell = chain.deploy(shell_contract(variant), logic.address, _as_int(loan_discount), _as_int(liquidation_discount))
        controller = chain.at(CONTROLLER_CONTRACT[variant], shell.address)
    chain.tx(amm.functions.set_admin(controller.address))
    if kind == "mint":
        chain.tx(factory.functions.add_market(collateral.address, controller.address, amm.address))
    else:
        chain.tx(
            factory.functions.add_market(stablecoin.address, collateral.address, controller.address, amm.address, oracle.address)
        )
    if liquidity is None:
        liquidity = 10**7 * 10**borrowed_decimals
    if liquidity:
        chain.tx(stablecoin.functions.mint(controller.address, liquidity))

    return LlammaDeployment(
        chain=chain,
        variant=variant,
        stablecoin=stablecoin,
        collateral=collateral,
        oracle=oracle,
        amm=amm,
        controller=controller,
        factory=factory,
        factory_kind=kind,
        weth=weth,
        collateral_decimals=collateral_decimals,
        borrowed_decimals=borrowed_decimals,
        compiler=compiler,
        logic=logic,
    )
