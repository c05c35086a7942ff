# pragma version ~=0.4.3
"""
@title Perp v1 insurance fund (reference implementation)
@notice Registry of the markets (`getAllAmms`, `isExistedAmm`, as the keeper discovers them)
        and the vault that covers bad debt: only the ClearingHouse (the beneficiary) may
        withdraw. Amounts are 18-decimal quote (1e18 = one token), converted to token units
        rounding down like Perp's DecimalERC20. Unlike the real fund, it never swaps other
        assets or mints protocol tokens to cover a shortfall: it reverts "Fund not enough".
"""

from . import _decimal_erc20 as erc20
from . import _math as m

interface IAmmQuote:
    def quoteAsset() -> address: view

MAX_AMMS: constant(uint256) = 64

event Withdrawn:
    withdrawer: address
    amount: uint256

event TokenAdded:
    tokenAddress: address

owner: public(address)
beneficiary: address
amms: DynArray[address, MAX_AMMS]
ammMap: HashMap[address, bool]
quoteTokenMap: HashMap[address, bool]


@deploy
def __init__():
    self.owner = msg.sender


@internal
@view
def _only_owner():
    assert msg.sender == self.owner, "PerpFiOwnableUpgrade: caller is not the owner"


@external
def addAmm(_amm: address):
    """@notice register a market and its quote token"""
    self._only_owner()
    assert not self.ammMap[_amm], "amm already added"
    self.ammMap[_amm] = True
    self.amms.append(_amm)
    token: address = staticcall IAmmQuote(_amm).quoteAsset()
    if not self.quoteTokenMap[token]:
        self.quoteTokenMap[token] = True
        log TokenAdded(tokenAddress=token)


@external
def removeAmm(_amm: address):
    """@notice unregister a market (swap-and-pop: the order of getAllAmms changes)"""
    self._only_owner()
    assert self.ammMap[_amm], "amm not existed"
    self.ammMap[_amm] = False
    count: uint256 = len(self.amms)
    for i: uint256 in range(count, bound=MAX_AMMS):
        if self.amms[i] == _amm:
            self.amms[i] = self.amms[count - 1]
            self.amms.pop()
            break


@external
def setClearingHouse(_clearingHouse: address):
    """@notice the only account allowed to withdraw (Perp's `setBeneficiary`)"""
    self._only_owner()
    self.beneficiary = _clearingHouse


@external
def withdraw(_quoteToken: address, _amount: m.Decimal):
    """@notice pay `_amount` (18-decimal quote) to the ClearingHouse"""
    assert msg.sender == self.beneficiary, "caller is not beneficiary"
    assert self.quoteTokenMap[_quoteToken], "Asset is not supported"
    assert erc20.balance_of(_quoteToken, self) >= _amount.d, "Fund not enough"
    erc20.transfer(_quoteToken, msg.sender, _amount.d)
    log Withdrawn(withdrawer=msg.sender, amount=_amount.d)


@external
@view
def isExistedAmm(_amm: address) -> bool:
    return self.ammMap[_amm]


@external
@view
def getAllAmms() -> DynArray[address, MAX_AMMS]:
    return self.amms
