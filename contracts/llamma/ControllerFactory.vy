# pragma version ~=0.4.3
"""
@title crvUSD ControllerFactory (market registry)
@notice Same discovery views as the mainnet crvUSD ControllerFactory: n_collaterals(),
        controllers(i), amms(i), collaterals(i), stablecoin(), WETH(), admin().
        Markets are deployed elsewhere (AMM + Controller) and registered here by the admin; the
        real factory deploys them from blueprints and mints crvUSD to them.
"""

event AddMarket:
    collateral: indexed(address)
    controller: address
    amm: address
    monetary_policy: address
    ix: uint256

MAX_CONTROLLERS: constant(uint256) = 50000

stablecoin: public(immutable(address))
WETH: public(immutable(address))
admin: public(address)
n_collaterals: public(uint256)
controllers: public(address[MAX_CONTROLLERS])
amms: public(address[MAX_CONTROLLERS])
collaterals: public(address[MAX_CONTROLLERS])


@deploy
def __init__(_stablecoin: address, _weth: address):
    """
    @param _stablecoin crvUSD (borrowed token of every market)
    @param _weth Wrapped native token (markets with this collateral may pay out ETH)
    """
    stablecoin = _stablecoin
    WETH = _weth
    self.admin = msg.sender


@external
def add_market(collateral: address, controller: address, amm: address) -> uint256:
    """
    @notice Register a deployed market; returns its index
    """
    assert msg.sender == self.admin, "only admin"
    ix: uint256 = self.n_collaterals
    self.controllers[ix] = controller
    self.amms[ix] = amm
    self.collaterals[ix] = collateral
    self.n_collaterals = ix + 1
    log AddMarket(collateral=collateral, controller=controller, amm=amm, monetary_policy=empty(address), ix=ix)
    return ix


@external
def set_admin(_admin: address):
    assert msg.sender == self.admin, "only admin"
    self.admin = _admin
