"""Shared fixtures: real anvil nodes on free loopback ports, one per test (or per module).

Chain scenario clocks start 30 days in the past so time travel (evm_increaseTime) never runs
ahead of wall-clock time (see docs/PROTOCOLS.md §L on reloads going back in time).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, settings

from keeper.devtools.anvil import AnvilProcess
from keeper.devtools.chain import DevChain

PAST_GENESIS = int(time.time()) - 30 * 86400

# Property tests check values, not speed (speed is measured by scripts/bench_*.py): no per-example
# deadline and no "too slow" health check, which a loaded 2-core CI machine would trip at random.
settings.register_profile("keeper", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("keeper")


def start_anvil(**kwargs) -> AnvilProcess:
    kwargs.setdefault("timestamp", PAST_GENESIS)
    return AnvilProcess(**kwargs).start()


@pytest.fixture
def anvil():
    """A fresh anvil node for one test (automine on, chain id 31337, 10 funded accounts)."""
    node = start_anvil()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def chain(anvil) -> DevChain:
    return DevChain(anvil.url)


@pytest.fixture(scope="module")
def module_anvil():
    """One anvil node shared by a module; pair it with evm_snapshot/evm_revert per test."""
    node = start_anvil()
    try:
        yield node
    finally:
        node.stop()
