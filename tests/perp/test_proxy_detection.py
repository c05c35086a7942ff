"""Variant detection sees through upgradeable proxies (the production ClearingHouse is one)."""

from __future__ import annotations

import pytest

from keeper.abi import PROXY_IMPLEMENTATION_SLOTS, abi, code_has_selector, implementation_code
from keeper.rpc import RpcClient

pytestmark = pytest.mark.chain
SLIPPAGE = abi("perp/ClearingHouse").fn("liquidateWithSlippage").selector


@pytest.mark.parametrize("slot", PROXY_IMPLEMENTATION_SLOTS)
async def test_implementation_code_follows_proxy_slots(perp, slot):
    chain = perp.chain
    proxy = chain.deploy("common/ERC20", "Proxy", "PRX", 18).address  # any contract without the selector
    async with RpcClient([chain.url]) as rpc:
        own = await implementation_code(rpc, proxy)
        assert not code_has_selector(own, SLIPPAGE)
        chain.rpc("anvil_setStorageAt", [proxy, slot, "0x" + perp.clearing_house.address[2:].lower().rjust(64, "0")])
        through = await implementation_code(rpc, proxy)
        assert through == await rpc.get_code(perp.clearing_house.address)
        assert code_has_selector(through, SLIPPAGE)
