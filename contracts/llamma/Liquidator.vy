# pragma version ~=0.4.3
"""
@title LLAMMA liquidator: hard-liquidates through the Controller's callback and sells the
       collateral on an on-chain route in the same transaction
@notice Owned by the keeper's key. `liquidate` calls the Controller's liquidate_extended with this
        contract as the callbacker; the Controller sends it the withdrawn collateral y and calls
        callback_liquidate, which sells y along the route (up to 3 hops: Curve stableswap, Curve
        cryptoswap, Uniswap V2 pair) and returns the proceeds, of which the Controller keeps d - x
        and sends the rest back to this contract. When x >= d the Controller does not call back: it
        sends y and x - d directly, and `liquidate` sells y itself. Either way the call reverts
        unless no collateral is left, the route paid at least `min_out`, and this contract's
        stablecoin balance grew by at least `min_profit` ("profit below min"): a wrong estimate, a
        lost race or a sandwich costs gas, never principal. The gain goes to the owner unless
        keep_proceeds is set (then the owner sweeps).

        Controller ABI (abi_kind): 0 = liquidate_extended(user, min_x, frac, use_eth, callbacker,
        args) 0x036aed88 (M1, M2, LlamaLend 0-7; called with use_eth = False), 1 =
        liquidate_extended(user, min_x, frac, callbacker, args) 0xfed9698c (LlamaLend 8+, V3).
        Tokens come from the market's AMM: coins(0) the stablecoin, coins(1) the collateral.

        The liquidation in progress (controller, user, route, min_out, tokens) lives in transient
        storage: callback_liquidate accepts only that controller, for that user, once.
        Funds move only in liquidate (to the owner) and sweep (to the owner); every approval is
        for the exact amount about to be pulled and is reset to 0 if it was not used up.
"""

from ethereum.ercs import IERC20

interface Controller:
    def amm() -> address: view

interface ControllerM2:
    def liquidate_extended(user: address, min_x: uint256, frac: uint256, use_eth: bool, callbacker: address, callback_args: DynArray[uint256, 5]): nonpayable

interface ControllerV3:
    def liquidate_extended(user: address, min_x: uint256, frac: uint256, callbacker: address, callback_args: DynArray[uint256, 5]): nonpayable

interface LLAMMA:
    def coins(i: uint256) -> address: view

interface UniV2Pair:
    def getReserves() -> (uint112, uint112, uint32): view
    def swap(amount0Out: uint256, amount1Out: uint256, to: address, data: Bytes[1]): nonpayable

struct Hop:
    pool: address
    kind: uint8        # 0 Curve stableswap (int128 indices), 1 Curve cryptoswap (uint256), 2 Uniswap V2 pair
    i: uint256         # index of token_in in the pool (kind 2: 0 if token_in is token0 else 1)
    j: uint256         # index of token_out
    token_in: address
    token_out: address

event Liquidation:
    controller: indexed(address)
    user: indexed(address)
    frac: uint256
    collateral_sold: uint256   # collateral units sold along the route
    proceeds: uint256          # stablecoin the route paid
    stable_paid: uint256       # stablecoin the Controller kept: d - x, or 0 when x >= d
    profit: uint256            # stablecoin balance after - before (the realised gain)

event Sweep:
    token: indexed(address)
    amount: uint256

MAX_HOPS: constant(uint256) = 3
KIND_STABLESWAP: constant(uint8) = 0
KIND_CRYPTOSWAP: constant(uint8) = 1
KIND_UNIV2: constant(uint8) = 2
STABLESWAP_EXCHANGE: constant(bytes4) = method_id("exchange(int128,int128,uint256,uint256)", output_type=bytes4)
CRYPTOSWAP_EXCHANGE: constant(bytes4) = method_id("exchange(uint256,uint256,uint256,uint256)", output_type=bytes4)

owner: public(address)
keep_proceeds: public(bool)

# the liquidation in progress (transient: gone at the end of the transaction, cleared explicitly too)
cb_controller: transient(address)
cb_user: transient(address)
cb_route: transient(DynArray[Hop, MAX_HOPS])
cb_min_out: transient(uint256)
cb_stablecoin: transient(address)
cb_called: transient(bool)
cb_sold: transient(uint256)
cb_proceeds: transient(uint256)
cb_paid: transient(uint256)


@deploy
def __init__(owner: address, keep_proceeds: bool):
    assert owner != empty(address), "no owner"
    self.owner = owner
    self.keep_proceeds = keep_proceeds


@internal
def _approve(token: address, spender: address, amount: uint256):
    assert extcall IERC20(token).approve(spender, amount, default_return_value=True), "approve failed"


@internal
def _reset_allowance(token: address, spender: address):
    if staticcall IERC20(token).allowance(self, spender) != 0:
        self._approve(token, spender, 0)


@internal
@view
def _balance(token: address) -> uint256:
    return staticcall IERC20(token).balanceOf(self)


@internal
@pure
def _check_route(route: DynArray[Hop, MAX_HOPS], collateral: address, stablecoin: address):
    assert len(route) > 0, "empty route"
    assert route[0].token_in == collateral, "route must start at the collateral"
    assert route[len(route) - 1].token_out == stablecoin, "route must end at the stablecoin"
    for k: uint256 in range(MAX_HOPS):
        if k == len(route):
            break
        hop: Hop = route[k]
        assert hop.kind <= KIND_UNIV2, "bad hop kind"
        assert hop.i != hop.j and hop.token_in != hop.token_out, "bad hop"
        if hop.kind == KIND_UNIV2:
            assert hop.i + hop.j == 1, "bad hop"
        if k + 1 < len(route):
            assert hop.token_out == route[k + 1].token_in, "route does not chain"


@internal
def _swap(hop: Hop, amount: uint256) -> uint256:
    """
    @notice Sell `amount` of hop.token_in on hop.pool; returns the token_out received (balance delta)
    """
    before: uint256 = self._balance(hop.token_out)
    if hop.kind == KIND_UNIV2:
        r0: uint112 = 0
        r1: uint112 = 0
        ts: uint32 = 0
        r0, r1, ts = staticcall UniV2Pair(hop.pool).getReserves()
        r_in: uint256 = convert(r0, uint256)
        r_out: uint256 = convert(r1, uint256)
        if hop.i == 1:
            r_in = convert(r1, uint256)
            r_out = convert(r0, uint256)
        in_with_fee: uint256 = amount * 997
        out: uint256 = in_with_fee * r_out // (r_in * 1000 + in_with_fee)
        assert extcall IERC20(hop.token_in).transfer(hop.pool, amount, default_return_value=True), "transfer failed"
        if hop.i == 0:
            extcall UniV2Pair(hop.pool).swap(0, out, self, b"")
        else:
            extcall UniV2Pair(hop.pool).swap(out, 0, self, b"")
    else:
        self._approve(hop.token_in, hop.pool, amount)
        if hop.kind == KIND_STABLESWAP:
            raw_call(hop.pool, abi_encode(convert(hop.i, int128), convert(hop.j, int128), amount, empty(uint256), method_id=STABLESWAP_EXCHANGE))
        else:
            raw_call(hop.pool, abi_encode(hop.i, hop.j, amount, empty(uint256), method_id=CRYPTOSWAP_EXCHANGE))
        self._reset_allowance(hop.token_in, hop.pool)
    return self._balance(hop.token_out) - before


@internal
def _sell(route: DynArray[Hop, MAX_HOPS], amount: uint256, min_out: uint256) -> uint256:
    """
    @notice Sell `amount` collateral along `route`; asserts the final output >= min_out
    """
    out: uint256 = 0
    if amount > 0:
        out = amount
        for hop: Hop in route:
            out = self._swap(hop, out)
    assert out >= min_out, "min_out"
    return out


@external
@nonreentrant
def liquidate(
    controller: address,
    user: address,
    min_x: uint256,
    frac: uint256,
    route: DynArray[Hop, MAX_HOPS],
    min_out: uint256,
    min_profit: uint256,
    abi_kind: uint8,
) -> uint256:
    """
    @notice Liquidate `frac` (1e18 = all) of the loan of `user` on `controller`, selling the
            collateral along `route` (collateral -> ... -> stablecoin) for at least `min_out`
    @param min_x Floor on the stablecoin part withdrawn from the bands (the Controller's "Slippage")
    @param min_profit Revert unless this contract's stablecoin balance grows by at least this much
    @param abi_kind 0: liquidate_extended with use_eth (M1/M2/LlamaLend 0-7); 1: without (LlamaLend 8+, V3)
    @return The stablecoin gained (sent to the owner unless keep_proceeds)
    """
    assert msg.sender == self.owner, "not owner"
    assert abi_kind <= 1, "bad abi_kind"
    amm: address = staticcall Controller(controller).amm()
    stablecoin: address = staticcall LLAMMA(amm).coins(0)
    collateral: address = staticcall LLAMMA(amm).coins(1)
    self._check_route(route, collateral, stablecoin)

    stable_before: uint256 = self._balance(stablecoin)
    collateral_before: uint256 = self._balance(collateral)

    self.cb_controller = controller
    self.cb_user = user
    self.cb_route = route
    self.cb_min_out = min_out
    self.cb_stablecoin = stablecoin
    self.cb_called = False

    if abi_kind == 0:
        extcall ControllerM2(controller).liquidate_extended(user, min_x, frac, False, self, [])
    else:
        extcall ControllerV3(controller).liquidate_extended(user, min_x, frac, self, [])

    sold: uint256 = 0
    proceeds: uint256 = 0
    paid: uint256 = 0
    if self.cb_called:
        sold = self.cb_sold
        proceeds = self.cb_proceeds
        paid = self.cb_paid
    else:
        # x >= d: no callback; the collateral (and x - d) came directly
        sold = self._balance(collateral) - collateral_before
        proceeds = self._sell(route, sold, min_out)

    self.cb_controller = empty(address)
    self.cb_user = empty(address)
    self.cb_route = []
    self.cb_called = False
    self._reset_allowance(stablecoin, controller)

    assert self._balance(collateral) <= collateral_before, "collateral left"
    stable_after: uint256 = self._balance(stablecoin)
    assert stable_after >= stable_before + min_profit, "profit below min"
    profit: uint256 = stable_after - stable_before
    if not self.keep_proceeds and profit > 0:
        assert extcall IERC20(stablecoin).transfer(self.owner, profit, default_return_value=True), "transfer failed"
    log Liquidation(controller=controller, user=user, frac=frac, collateral_sold=sold, proceeds=proceeds, stable_paid=paid, profit=profit)
    return profit


@external
def callback_liquidate(
    user: address,
    stablecoins: uint256,
    collateral: uint256,
    debt: uint256,
    callback_args: DynArray[uint256, 5],
) -> uint256[2]:
    """
    @notice Called by the Controller of the liquidation in progress after it sent `collateral`
            here: sells it along the route and approves the Controller for exactly the proceeds
    @return [proceeds, 0]: the Controller keeps debt - stablecoins and returns the rest
    """
    assert msg.sender == self.cb_controller and msg.sender != empty(address), "not the controller"
    assert user == self.cb_user and not self.cb_called, "not the controller"
    self.cb_called = True
    proceeds: uint256 = self._sell(self.cb_route, collateral, self.cb_min_out)
    self.cb_sold = collateral
    self.cb_proceeds = proceeds
    if debt > stablecoins:
        self.cb_paid = debt - stablecoins
    else:
        self.cb_paid = 0
    self._approve(self.cb_stablecoin, msg.sender, proceeds)
    return [proceeds, 0]


@external
@nonreentrant
def sweep(token: address):
    """
    @notice Send this contract's whole balance of `token` to the owner
    """
    assert msg.sender == self.owner, "not owner"
    amount: uint256 = self._balance(token)
    if amount > 0:
        assert extcall IERC20(token).transfer(self.owner, amount, default_return_value=True), "transfer failed"
    log Sweep(token=token, amount=amount)
