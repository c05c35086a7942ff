# pragma version ~=0.4.3
"""
@title LlamaLend OneWayLendingFactory (market registry)
@notice Same discovery views as the mainnet lending factory: market_count(), controllers(i),
        amms(i), borrowed_tokens(i), collateral_tokens(i), admin(). Vaults are not modelled:
        markets are deployed elsewhere, funded with the borrowed token directly, and registered here.
"""

event NewVault:
    id: indexed(uint256)
    collateral_token: indexed(address)
    borrowed_token: indexed(address)
    vault: address
    controller: address
    amm: address
    price_oracle: address
    monetary_policy: address

MAX_MARKETS: constant(uint256) = 50000

admin: public(address)
market_count: public(uint256)
controllers: public(address[MAX_MARKETS])
amms: public(address[MAX_MARKETS])
borrowed_tokens: public(address[MAX_MARKETS])
collateral_tokens: public(address[MAX_MARKETS])


@deploy
def __init__():
    self.admin = msg.sender


@external
def add_market(borrowed_token: address, collateral_token: address, controller: address, amm: address, price_oracle: address) -> uint256:
    """
    @notice Register a deployed market; returns its index
    """
    assert msg.sender == self.admin, "only admin"
    ix: uint256 = self.market_count
    self.controllers[ix] = controller
    self.amms[ix] = amm
    self.borrowed_tokens[ix] = borrowed_token
    self.collateral_tokens[ix] = collateral_token
    self.market_count = ix + 1
    log NewVault(id=ix, collateral_token=collateral_token, borrowed_token=borrowed_token, vault=empty(address), controller=controller, amm=amm, price_oracle=price_oracle, monetary_policy=empty(address))
    return ix


@external
def set_admin(_admin: address):
    assert msg.sender == self.admin, "only admin"
    self.admin = _admin
