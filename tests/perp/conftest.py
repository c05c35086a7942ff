"""Perp reference-contract fixtures: one deployment per module (on the module's own anvil),
restored with evm_snapshot / evm_revert around every test."""

from __future__ import annotations

import pytest

from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import PerpDeployment, deploy_perp


@pytest.fixture(scope="module")
def module_chain(module_anvil) -> DevChain:
    return DevChain(module_anvil.url)


@pytest.fixture(scope="module")
def perp_deployment(module_chain) -> PerpDeployment:
    return deploy_perp(module_chain, variant="v2.3")


@pytest.fixture(scope="module")
def perp22_deployment(module_chain, perp_deployment) -> PerpDeployment:
    # deployed after the v2.3 one so both can share the module's chain
    return deploy_perp(module_chain, variant="v2.2")


@pytest.fixture
def perp(perp_deployment):
    """The v2.3 deployment; every state change of the test is reverted afterwards."""
    with perp_deployment.chain.reverted():
        yield perp_deployment


@pytest.fixture
def perp22(perp22_deployment):
    """The v2.2 deployment; every state change of the test is reverted afterwards."""
    with perp22_deployment.chain.reverted():
        yield perp22_deployment


@pytest.fixture(scope="module")
def accounts(module_chain) -> dict[str, str]:
    a = module_chain.accounts
    return {"admin": a[0], "alice": a[1], "whale": a[2], "carol": a[3], "keeper": a[4], "backstop": a[5], "dave": a[6]}
