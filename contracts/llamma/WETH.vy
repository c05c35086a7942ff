# pragma version ~=0.4.3
"""
@title WETH9-compatible wrapped ether
@notice deposit() / withdraw(wad) / plain ETH transfers wrap, as WETH9; 18 decimals.
        withdraw sends the ETH with only the 2300-gas call stipend, like WETH9's transfer().
"""
from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

implements: IERC20
implements: IERC20Detailed

event Deposit:
    dst: indexed(address)
    wad: uint256

event Withdrawal:
    src: indexed(address)
    wad: uint256

name: public(String[64])
symbol: public(String[32])
decimals: public(uint8)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


@deploy
def __init__():
    self.name = "Wrapped Ether"
    self.symbol = "WETH"
    self.decimals = 18


@internal
@payable
def _deposit():
    self.balanceOf[msg.sender] += msg.value
    log Deposit(dst=msg.sender, wad=msg.value)


@external
@payable
def __default__():
    self._deposit()


@external
@payable
def deposit():
    self._deposit()


@external
def withdraw(wad: uint256):
    self.balanceOf[msg.sender] -= wad
    # like Solidity's transfer(): 2300 gas in all (the call stipend, or explicitly when wad == 0)
    stipend: uint256 = 0
    if wad == 0:
        stipend = 2300
    raw_call(msg.sender, b"", value=wad, gas=stipend)
    log Withdrawal(src=msg.sender, wad=wad)


@external
@view
def totalSupply() -> uint256:
    return self.balance


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log IERC20.Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def transfer(to: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=msg.sender, receiver=to, value=amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    if owner != msg.sender:
        allowed: uint256 = self.allowance[owner][msg.sender]
        if allowed != max_value(uint256):
            self.allowance[owner][msg.sender] = allowed - amount
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=owner, receiver=to, value=amount)
    return True
