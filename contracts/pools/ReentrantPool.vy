# pragma version ~=0.4.3
"""
@title Malicious Curve-stableswap-ABI pool for the Liquidator's reentrancy tests
@notice Test fixture only. An honest constant-product pool (see _constant_product.vy), except that
        exchange() first makes one call of its owner's choosing (`set_reentry(target, data)`,
        e.g. Liquidator.sweep or Liquidator.liquidate or callback_liquidate) without reverting on
        failure, and records whether it succeeded and what it returned. It also forwards arbitrary
        calls from its owner (`execute`), so it can itself be the Liquidator's owner: then only the
        reentrancy lock stands between it and the Liquidator's funds.
"""

from . import _constant_product as cp

initializes: cp

exports: (cp.coins, cp.balances, cp.fee, cp.add_liquidity)

admin: public(address)
reentry_target: public(address)
reentry_data: public(Bytes[2048])
reentry_attempts: public(uint256)
reentry_succeeded: public(uint256)
last_response: public(Bytes[256])


@deploy
def __init__(coin0: address, coin1: address, fee: uint256):
    cp.__init__(coin0, coin1, fee)
    self.admin = msg.sender


@external
def set_reentry(target: address, data: Bytes[2048]):
    assert msg.sender == self.admin
    self.reentry_target = target
    self.reentry_data = data


@external
def execute(target: address, data: Bytes[2048]) -> Bytes[256]:
    """
    @notice Call `target` with `data` as this contract (bubbles up reverts)
    """
    assert msg.sender == self.admin
    return raw_call(target, data, max_outsize=256)


@external
@view
def get_dy(i: int128, j: int128, dx: uint256) -> uint256:
    return cp._get_dy(convert(i, uint256), convert(j, uint256), dx)


@external
def exchange(i: int128, j: int128, dx: uint256, min_dy: uint256) -> uint256:
    if self.reentry_target != empty(address):
        self.reentry_attempts += 1
        ok: bool = False
        response: Bytes[256] = b""
        ok, response = raw_call(self.reentry_target, self.reentry_data, max_outsize=256, revert_on_failure=False)
        if ok:
            self.reentry_succeeded += 1
        self.last_response = response
    return cp._exchange(convert(i, uint256), convert(j, uint256), dx, min_dy)
