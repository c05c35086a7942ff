# pragma version ~=0.4.3
"""
@title DecimalERC20: 18-decimal amounts over tokens of any decimals
@notice Stateless module. Amounts passed in are 18-decimal (1e18 = one token); transfers
        send floor(D / 10**(18 - decimals)) token units and re-check the receiver's balance
        ("DecimalERC20: balance inconsistent"), like Perp v1's DecimalERC20.
"""

interface ITokenView:
    def balanceOf(owner: address) -> uint256: view
    def decimals() -> uint8: view


@internal
@view
def _decimals(token: address) -> uint256:
    return convert(staticcall ITokenView(token).decimals(), uint256)


@internal
@view
def to_uint(token: address, amount: uint256) -> uint256:
    """@notice 18-decimal amount -> token units, rounded down"""
    dec: uint256 = self._decimals(token)
    if dec >= 18:
        return amount * 10 ** (dec - 18)
    return amount // 10 ** (18 - dec)


@internal
@view
def to_decimal(token: address, units: uint256) -> uint256:
    """@notice token units -> 18-decimal amount"""
    dec: uint256 = self._decimals(token)
    if dec >= 18:
        return units // 10 ** (dec - 18)
    return units * 10 ** (18 - dec)


@internal
@view
def balance_of(token: address, owner: address) -> uint256:
    """@notice balance of `owner` as an 18-decimal amount"""
    return self.to_decimal(token, staticcall ITokenView(token).balanceOf(owner))


@internal
def _call_ok(token: address, data: Bytes[100], reason: String[40]):
    ok: bool = False
    ret: Bytes[32] = b""
    ok, ret = raw_call(token, data, max_outsize=32, revert_on_failure=False)
    if ok and len(ret) > 0:
        ok = abi_decode(ret, bool)
    assert ok, reason


@internal
def _validate(token: address, to: address, units: uint256, balance_before: uint256):
    assert self.balance_of(token, to) == balance_before + self.to_decimal(token, units), \
        "DecimalERC20: balance inconsistent"


@internal
def transfer(token: address, to: address, amount: uint256):
    """@notice send the 18-decimal `amount` (rounded down to token units) to `to`"""
    before: uint256 = self.balance_of(token, to)
    units: uint256 = self.to_uint(token, amount)
    self._call_ok(token, abi_encode(to, units, method_id=method_id("transfer(address,uint256)")),
                  "DecimalERC20: transfer failed")
    self._validate(token, to, units, before)


@internal
def transfer_from(token: address, sender: address, to: address, amount: uint256):
    """@notice pull the 18-decimal `amount` (rounded down to token units) from `sender` to `to`"""
    before: uint256 = self.balance_of(token, to)
    units: uint256 = self.to_uint(token, amount)
    self._call_ok(token, abi_encode(sender, to, units, method_id=method_id("transferFrom(address,address,uint256)")),
                  "DecimalERC20: transferFrom failed")
    self._validate(token, to, units, before)
