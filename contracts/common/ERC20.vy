# pragma version ~=0.4.3
"""
@title Mintable ERC20 test token
@notice Reference token for tests and the demo (USDC with 6 decimals, crvUSD 18, WBTC 8, ...).
        `mint` is open to the minter only; the minter may hand minting to other contracts.
"""
from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

implements: IERC20
implements: IERC20Detailed

name: public(String[64])
symbol: public(String[32])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
minters: public(HashMap[address, bool])


@deploy
def __init__(_name: String[64], _symbol: String[32], _decimals: uint8):
    self.name = _name
    self.symbol = _symbol
    self.decimals = _decimals
    self.minters[msg.sender] = True


@external
def set_minter(who: address, allowed: bool):
    assert self.minters[msg.sender], "not minter"
    self.minters[who] = allowed


@external
def mint(to: address, amount: uint256) -> bool:
    assert self.minters[msg.sender], "not minter"
    self.totalSupply += amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=empty(address), receiver=to, value=amount)
    return True


@external
def burn(amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.totalSupply -= amount
    log IERC20.Transfer(sender=msg.sender, receiver=empty(address), value=amount)
    return True


@external
def transfer(to: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=msg.sender, receiver=to, value=amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[owner][msg.sender]
    if allowed != max_value(uint256):
        self.allowance[owner][msg.sender] = allowed - amount
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=owner, receiver=to, value=amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log IERC20.Approval(owner=msg.sender, spender=spender, value=amount)
    return True
