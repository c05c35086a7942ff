"""RPC client against a real anvil behind a fault-injecting proxy: failover, timeouts, retries,
batches, revert decoding."""

from __future__ import annotations

import time

import pytest

from keeper.devtools.faultproxy import FaultProxy
from keeper.rpc import ExecutionReverted, RpcClient, RpcError, RpcUnavailable, decode_revert_data

pytestmark = pytest.mark.chain


@pytest.fixture
async def proxies(anvil):
    a = await FaultProxy(anvil.url).start()
    b = await FaultProxy(anvil.url).start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("fault", ["error", "garbage", "rpcerror", "hang"])
async def test_fails_over_to_the_second_endpoint(proxies, fault):
    primary, backup = proxies
    primary.mode = fault
    # A long cooldown, so the calls below fall inside it however slow a loaded machine is.
    async with RpcClient([primary.url, backup.url], timeout=1.0, max_retries=2, cooldown_base=60) as rpc:
        t0 = time.monotonic()
        assert await rpc.chain_id() == 31337
        assert time.monotonic() - t0 < 20  # one timeout (hang) then the backup, not the 60 s cooldown or more
        assert backup.requests >= 1 and primary.faults >= 1
        # The failed endpoint is in cooldown: the next calls go straight to the backup.
        before = primary.requests
        for _ in range(3):
            await rpc.block_number()
        assert primary.requests == before
        status = {s["url"]: s for s in rpc.endpoint_status()}
        assert any(s["errors"] >= 1 for s in status.values())


async def test_all_endpoints_down_raises_unavailable_after_bounded_retries(proxies):
    primary, backup = proxies
    primary.mode = backup.mode = "error"
    async with RpcClient([primary.url, backup.url], timeout=0.5, max_retries=2, backoff_max=0.05) as rpc:
        with pytest.raises(RpcUnavailable, match="all RPC endpoints failed"):
            await rpc.chain_id()
        assert primary.requests + backup.requests == 3  # max_retries + 1 attempts, then a clear error


async def test_unreachable_url_is_a_transport_error_not_a_crash():
    async with RpcClient(["http://127.0.0.1:9"], timeout=0.5, max_retries=1, backoff_max=0.05) as rpc:
        with pytest.raises(RpcUnavailable):
            await rpc.block_number()


async def test_batch_and_per_item_errors(anvil):
    async with RpcClient([anvil.url], batch_size=2) as rpc:
        out = await rpc.batch([("eth_chainId", []), ("eth_blockNumber", []), ("eth_nope", []), ("eth_chainId", [])])
        assert out[0] == "0x7a69" and out[3] == "0x7a69"
        assert isinstance(out[2], RpcError) and not isinstance(out[2], ExecutionReverted)
        assert rpc.stats.calls == 4 and rpc.stats.http_requests == 2


async def test_revert_reason_is_decoded(anvil, chain):
    erc20 = chain.deploy("common/ERC20", "T", "T", 18)
    data = erc20.functions.mint(chain.accounts[1], 1)._encode_transaction_data()
    async with RpcClient([anvil.url]) as rpc:
        with pytest.raises(ExecutionReverted) as info:
            await rpc.eth_call(erc20.address, bytes.fromhex(data[2:]), sender=chain.accounts[5])
        assert info.value.reason == "not minter"


def test_decode_revert_data_forms():
    assert decode_revert_data("0x") == ""
    err = "0x08c379a0" + "20".rjust(64, "0") + "3".rjust(64, "0") + b"abc".hex().ljust(64, "0")
    assert decode_revert_data(err) == "abc"
    assert decode_revert_data("0x4e487b71" + "11".rjust(64, "0")) == "panic 0x11"
    assert decode_revert_data("0xdeadbeef") == "custom error 0xdeadbeef"
