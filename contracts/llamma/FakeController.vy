# pragma version ~=0.4.3
"""
@title Malicious "controller" for the Liquidator's access tests
@notice Test fixture only. Looks like a V3 controller to the Liquidator (amm() of a real market,
        liquidate_extended(user, min_x, frac, callbacker, args) 0xfed9698c) but does whatever its
        admin scripted: optionally sends `send_collateral` of the market's collateral to the
        callbacker, calls callback_liquidate(user, cb_stablecoins, cb_collateral, cb_debt, [])
        with made-up numbers (and, if set, for `callback_user` instead), then tries to pull `pull` stablecoins (0: what the callback returned)
        from the callbacker. Reverts "callback failed" (the callback reverted without a reason) or
        with the callback's reason, and "pull refused" (the transferFrom failed), so tests can tell
        which step stopped it. `call_callback` calls back any contract outside of a liquidation.
"""

from ethereum.ercs import IERC20

interface Callbacker:
    def callback_liquidate(user: address, stablecoins: uint256, collateral: uint256, debt: uint256, callback_args: DynArray[uint256, 5]) -> uint256[2]: nonpayable

interface LLAMMA:
    def coins(i: uint256) -> address: view

admin: public(address)
amm: public(address)
do_callback: public(bool)
send_collateral: public(uint256)
cb_stablecoins: public(uint256)
cb_collateral: public(uint256)
cb_debt: public(uint256)
pull: public(uint256)
callback_user: public(address)  # if set, called back for this user instead of the one liquidated


@deploy
def __init__(amm: address):
    self.admin = msg.sender
    self.amm = amm


@external
def script(do_callback: bool, send_collateral: uint256, cb_stablecoins: uint256, cb_collateral: uint256, cb_debt: uint256, pull: uint256):
    assert msg.sender == self.admin
    self.do_callback = do_callback
    self.send_collateral = send_collateral
    self.cb_stablecoins = cb_stablecoins
    self.cb_collateral = cb_collateral
    self.cb_debt = cb_debt
    self.pull = pull


@external
def set_callback_user(user: address):
    assert msg.sender == self.admin
    self.callback_user = user


@external
def liquidate_extended(user: address, min_x: uint256, frac: uint256, callbacker: address, callback_args: DynArray[uint256, 5]):
    stablecoin: address = staticcall LLAMMA(self.amm).coins(0)
    collateral: address = staticcall LLAMMA(self.amm).coins(1)
    if self.send_collateral > 0:
        assert extcall IERC20(collateral).transfer(callbacker, self.send_collateral)
    pull: uint256 = self.pull
    if self.do_callback:
        cb_user: address = user
        if self.callback_user != empty(address):
            cb_user = self.callback_user
        ok: bool = False
        response: Bytes[256] = b""
        ok, response = raw_call(
            callbacker,
            abi_encode(cb_user, self.cb_stablecoins, self.cb_collateral, self.cb_debt, empty(DynArray[uint256, 5]), method_id=method_id("callback_liquidate(address,uint256,uint256,uint256,uint256[])")),
            max_outsize=256,
            revert_on_failure=False,
        )
        if not ok:
            if len(response) > 0:
                raw_revert(response)  # the callbacker's own reason
            raise "callback failed"
        if pull == 0:
            pull = convert(slice(response, 0, 32), uint256)
    if pull > 0:
        pulled: bool = False
        pulled = raw_call(
            stablecoin,
            abi_encode(callbacker, self, pull, method_id=method_id("transferFrom(address,address,uint256)")),
            revert_on_failure=False,
        )
        assert pulled, "pull refused"


@external
def call_callback(target: address, user: address, stablecoins: uint256, collateral: uint256, debt: uint256) -> uint256[2]:
    return extcall Callbacker(target).callback_liquidate(user, stablecoins, collateral, debt, [])
