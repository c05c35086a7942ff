"""Private submission (`tx.private_rpc_urls`) against a real anvil and real signed transactions.

Two recording proxies stand in front of the same anvil: one is the public RPC (chain.rpc_urls), the
other the private endpoint. Every assertion reads what each proxy received, the node's pool and
receipts, or the journal: raw transactions (first send, replacement, cancellation, re-offer,
rebroadcast at startup) reach only the private endpoint, while receipts and nonces are read from
the public one; a private outage never makes a transaction public unless `private_fallback` is on."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from keeper.config import ConfigError, GasConfig, TxConfig, parse_config
from keeper.daemon import private_endpoint_checks
from keeper.devtools.accounts import ANVIL_ADDRESSES
from keeper.devtools.anvil import free_port
from keeper.devtools.chain import DevChain
from keeper.devtools.faultproxy import FaultProxy
from keeper.gas import FeePolicy
from keeper.keys import Signer
from keeper.rpc import RpcClient
from keeper.store import Store
from keeper.txs import Review, SendRejected, SendUnreachable, TxManager
from tests.harness import KEEPER, KEEPER_KEY, RecordingLog, keeper_config, perp_protocol, settle_pool, start_engine, step
from tests.txs.test_tx_faults import keeper_liquidations, liquidatable_world
from tests.txs.test_tx_manager import GAS, Reviews, attempts, head_of, later, pool, pool_count, rows, send

pytestmark = pytest.mark.chain
RAW = "eth_sendRawTransaction"
PRIVATE = "eth_sendPrivateTransaction"


def refused_url(path: str = "") -> str:
    """An endpoint nothing listens on: the connection is refused, so no byte can leave."""
    return f"http://127.0.0.1:{free_port()}{path}"


async def open_private_manager(public: str, private: list[str], state: Path, log: RecordingLog, **tx: Any) -> TxManager:
    rpc = await RpcClient([public], backoff_max=0.2, cooldown_base=0.05).start()
    cfg = TxConfig(**{"replace_after_blocks": 2, "fee_bump": Decimal("1.25"), "private_rpc_urls": private, **tx})
    return TxManager(rpc, Signer(Account.from_key(KEEPER_KEY)), Store(state), FeePolicy(GasConfig(**GAS)), cfg, 31337, log)


async def close(txm: TxManager) -> None:
    await txm.close()
    await txm.rpc.close()
    txm.store.close()


class Proxies:
    """The public RPC and the private endpoint, both recording, both forwarding to the same anvil."""

    def __init__(self, public: FaultProxy, private: FaultProxy):
        self.public, self.private = public, private

    @classmethod
    async def start(cls, upstream: str, *, private_tx: bool = False) -> Proxies:
        return cls(await FaultProxy(upstream).start(), await FaultProxy(upstream, private_tx=private_tx).start())

    async def stop(self) -> None:
        await self.public.stop()
        await self.private.stop()


async def test_every_raw_transaction_goes_only_to_the_private_endpoint_and_is_tracked_on_the_public_one(anvil, tmp_path):
    chain = DevChain(anvil.url)
    proxies = await Proxies.start(anvil.url)
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_private_manager(proxies.public.url, [proxies.private.url], state, log)
    try:
        head = await head_of(txm)
        # 1. a first send: mined (automine), its receipt found through the public RPC
        before = time.monotonic()
        first = await send(txm, head)
        assert txm.last_route == "private" and txm.last_broadcast_at >= before
        assert proxies.private.count(RAW) == 1 and proxies.public.count(RAW) == 0
        assert chain.w3.eth.wait_for_transaction_receipt(first.hashes[0], timeout=30)["status"] == 1
        receipts_before = proxies.public.count("eth_getTransactionReceipt")
        (done,) = await txm.poll(later(head, 1), Reviews())
        assert done.status == "mined" and done.tx_hash == first.hashes[0]
        assert proxies.public.count("eth_getTransactionReceipt") > receipts_before
        assert proxies.private.methods == [RAW]  # nothing but the raw transaction went private

        # 2. stuck: a replacement, then a cancellation, both private
        chain.set_automine(False)
        head = await head_of(txm)
        stuck = await send(txm, head)
        await txm.poll(later(head, 2), Reviews(Review("replace", gas_limit=40_000)))
        replacement = pool(chain)[1]
        assert replacement["hash"] == stuck.hashes[-1] != stuck.hashes[0] and int(replacement["gas"], 16) == 40_000
        await txm.poll(later(head, 4), Reviews(Review("cancel", reason="would revert")))
        cancel = pool(chain)[1]
        assert cancel["to"].lower() == KEEPER.lower() and cancel["hash"] == stuck.hashes[-1]
        assert log.events("tx_replaced")[0]["route"] == "private" and log.events("tx_cancel_sent")[0]["route"] == "private"
        assert proxies.private.count(RAW) == 4 and proxies.public.count(RAW) == 0

        # 3. a cancellation in progress is bumped (without review): privately too
        await txm.poll(later(head, 6), Reviews())
        assert proxies.private.count(RAW) == 5 and proxies.public.count(RAW) == 0
        bumped = pool(chain)[1]
        assert int(bumped["maxFeePerGas"], 16) > int(cancel["maxFeePerGas"], 16)
    finally:
        await close(txm)

    # 4. a restart rebroadcasts the pending bytes: privately
    log = RecordingLog()
    txm = await open_private_manager(proxies.public.url, [proxies.private.url], state, log)
    try:
        assert await txm.start(later(head, 6)) == []
        assert proxies.private.count(RAW) == 6 and proxies.public.count(RAW) == 0
        chain.mine()
        (done,) = await txm.poll(later(head, 7), Reviews())
    finally:
        await close(txm)
        await proxies.stop()
        chain.set_automine(True)
    assert done.status == "cancelled" and done.tx_hash == bumped["hash"] and chain.nonce(KEEPER) == 2
    assert [a["action"] for a in attempts(state)] == ["send", "send", "replace", "cancel", "cancel"]
    assert [r["status"] for r in rows(state)] == ["mined", "cancelled"]


async def test_a_kept_transaction_the_node_evicted_is_re_offered_privately(anvil, tmp_path):
    chain = DevChain(anvil.url)
    chain.set_automine(False)
    proxies = await Proxies.start(anvil.url)
    log = RecordingLog()
    txm = await open_private_manager(proxies.public.url, [proxies.private.url], tmp_path / "k.sqlite", log)
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        sent_at = txm.last_broadcast_at
        original = pool(chain)[0]
        chain.rpc("anvil_dropTransaction", [p.hashes[0]])
        await txm.poll(later(head, 2), Reviews(Review("keep", reason="replacement_unprofitable")))
        assert pool(chain) == {0: original}
        (reoffer,) = log.events("tx_reoffered")
        assert reoffer["route"] == "private" and reoffer["refused"] is None
        assert proxies.private.count(RAW) == 2 and proxies.public.count(RAW) == 0
        # a re-offer is no send of this head: the head-to-broadcast mark stays at the first send
        assert txm.last_broadcast_at == sent_at
    finally:
        await close(txm)
        await proxies.stop()
        chain.set_automine(True)


async def test_eth_send_private_transaction_mode_sends_the_tx_object_and_the_transaction_is_mined(anvil, tmp_path):
    chain = DevChain(anvil.url)
    proxies = await Proxies.start(anvil.url, private_tx=True)
    txm = await open_private_manager(
        proxies.public.url, [proxies.private.url], tmp_path / "k.sqlite", RecordingLog(), private_method=PRIVATE
    )
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        receipt = chain.w3.eth.wait_for_transaction_receipt(p.hashes[0], timeout=30)
        (done,) = await txm.poll(later(head, 1), Reviews())
    finally:
        await close(txm)
        await proxies.stop()
    assert receipt["status"] == 1 and done.status == "mined" and done.tx_hash == p.hashes[0]
    assert proxies.private.methods == [PRIVATE]
    assert proxies.public.count(RAW) == 0 and proxies.public.count(PRIVATE) == 0


async def test_private_endpoint_refusing_connections_without_fallback_sends_nothing_and_releases_the_nonce(anvil, tmp_path):
    chain = DevChain(anvil.url)
    public = await FaultProxy(anvil.url).start()
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    down = refused_url("/v3/SECRET-API-KEY")
    txm = await open_private_manager(public.url, [down, refused_url()], state, log)
    try:
        head = await head_of(txm)
        with pytest.raises(SendUnreachable, match="no private endpoint answered"):
            await send(txm, head)
        assert not txm.pending and txm.nonces.allocate() == 0  # released: the next send takes nonce 0 again
        txm.nonces.release(0)
    finally:
        await close(txm)
        await public.stop()
    assert public.count(RAW) == 0 and pool_count(chain) == 0 and chain.nonce(KEEPER) == 0
    (row,) = rows(state)
    assert row["status"] == "failed" and "no private endpoint answered" in row["reason"]
    assert [a["status"] for a in attempts(state)] == ["refused"]
    failed = log.events("private_endpoint_failed")
    assert len(failed) == 2 and all(f["unsent"] for f in failed)
    # the endpoint's API key never reaches a log line or the journal
    assert "SECRET" not in repr(log.records) and "SECRET" not in row["reason"]


async def test_private_endpoint_answering_badly_without_fallback_is_outcome_unknown_and_nothing_goes_public(anvil, tmp_path):
    """HTTP 503 from the only private endpoint: it may hold the transaction, so the nonce stays used and
    the transaction is followed as sent; nothing reaches the public RPC."""
    chain = DevChain(anvil.url)
    public = await FaultProxy(anvil.url).start()
    broken = await FaultProxy(anvil.url, mode="error").start()
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_private_manager(public.url, [broken.url], state, log)
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        assert p.tx_id in txm.pending and p.nonce == 0 and txm.nonces.next == 1
        assert log.events("send_outcome_unknown")[0]["route"] == "private"
    finally:
        await close(txm)
        await public.stop()
        await broken.stop()
    assert broken.count(RAW) == 1 and public.count(RAW) == 0 and pool_count(chain) == 0
    assert rows(state)[0]["status"] == "sent"


async def test_private_endpoint_down_with_fallback_goes_public(anvil, tmp_path):
    chain = DevChain(anvil.url)
    public = await FaultProxy(anvil.url).start()
    log = RecordingLog()
    txm = await open_private_manager(public.url, [refused_url()], tmp_path / "k.sqlite", log, private_fallback=True)
    try:
        head = await head_of(txm)
        p = await send(txm, head)
        assert txm.last_route == "public" and log.events("private_fallback_public")
        receipt = chain.w3.eth.wait_for_transaction_receipt(p.hashes[0], timeout=30)
    finally:
        await close(txm)
        await public.stop()
    assert public.count(RAW) == 1 and receipt["status"] == 1


async def test_answers_of_several_private_endpoints_combine(anvil, tmp_path):
    """One endpoint accepts while another fails: accepted. Every endpoint that answers refuses it
    definitively (the other unreachable): rejected, nonce released, as for a public send."""
    chain = DevChain(anvil.url)
    proxies = await Proxies.start(anvil.url)
    flaky = await FaultProxy(anvil.url, mode="rpcerror").start()
    state = tmp_path / "k.sqlite"
    log = RecordingLog()
    txm = await open_private_manager(proxies.public.url, [flaky.url, proxies.private.url, refused_url()], state, log)
    try:
        head = await head_of(txm)
        ok = await send(txm, head)
        assert txm.last_route == "private" and ok.tx_id in txm.pending
        assert chain.w3.eth.wait_for_transaction_receipt(ok.hashes[0], timeout=30)["status"] == 1
        assert len(log.events("private_endpoint_failed")) == 2
        with pytest.raises(SendRejected, match="(?i)insufficient funds") as refused:
            await send(txm, head, value=chain.w3.eth.get_balance(KEEPER) + 1)
        assert not isinstance(refused.value, SendUnreachable)
        after = await send(txm, head, value=2)  # the rejected nonce is reused: no gap
        assert chain.w3.eth.wait_for_transaction_receipt(after.hashes[0], timeout=30)["status"] == 1
    finally:
        await close(txm)
        await proxies.stop()
        await flaky.stop()
    assert (ok.nonce, after.nonce) == (0, 1) and chain.nonce(KEEPER) == 2
    assert proxies.public.count(RAW) == 0 and proxies.private.count(RAW) == 3 and flaky.count(RAW) == 3
    assert [r["status"] for r in rows(state)] == ["sent", "failed", "sent"]


async def test_the_keeper_liquidates_through_the_private_endpoint_only(anvil, tmp_path):
    """The whole daemon (pipeline, execution, journal) on a crashed perp market: its liquidation reaches
    the private endpoint only, lands, and is settled from the public RPC."""
    chain = DevChain(anvil.url)
    perp, traders = liquidatable_world(chain)
    proxies = await Proxies.start(anvil.url)
    cfg = keeper_config(
        proxies.public.url, tmp_path / "k.sqlite", [perp_protocol(perp)], tx={"private_rpc_urls": [proxies.private.url]}
    )
    engine, log = await start_engine(cfg)
    try:
        await step(engine)
        assert log.events("liquidation_sent") and engine.txs is not None and engine.txs.last_route == "private"
        await settle_pool(engine)
        await step(engine)
    finally:
        await engine.close()
        await proxies.stop()
    (landed,) = log.events("liquidation_landed")
    assert len(keeper_liquidations(perp, traders["ETH"])) == 1
    assert chain.w3.eth.get_transaction(landed["tx"])["from"] == KEEPER
    assert proxies.private.count(RAW) >= 1 and set(proxies.private.methods) == {RAW}
    assert proxies.public.count(RAW) == 0 and proxies.public.count("eth_getTransactionReceipt") >= 1


def _config(private: list[str], chain_id: int = 31337, **tx: Any) -> Any:
    protocols = [{"kind": "perp_v1", "name": "perp", "clearing_house": ANVIL_ADDRESSES[4]}]
    data = keeper_config(
        "http://127.0.0.1:8545", ":memory:", protocols, chain={"chain_id": chain_id}, tx={"private_rpc_urls": private, **tx}
    )
    return parse_config(data, {})


async def test_keeper_check_has_a_row_per_private_endpoint(anvil):
    good = await FaultProxy(anvil.url).start()
    try:
        rows_ = await private_endpoint_checks(_config([good.url, refused_url("/key/SECRET")]))
        other_chain = await private_endpoint_checks(_config([good.url], chain_id=1))
    finally:
        await good.stop()
    (name_ok, ok, detail), (name_down, down, why) = rows_
    assert ok and detail == "chain 31337" and name_ok.startswith("private endpoint http://127.0.0.1:")
    assert not down and why.startswith("unreachable") and "SECRET" not in name_down + why
    ((_, matches, detail_other),) = other_chain
    assert not matches and "chain.chain_id = 1" in detail_other
    assert good.methods == ["eth_chainId", "eth_chainId"]
    assert await private_endpoint_checks(_config([])) == []


def test_private_submission_settings_are_validated():
    cfg = _config(["https://rpc.flashbots.net/fast"], private_method=PRIVATE, private_fallback=True)
    assert cfg.tx.private_rpc_urls == ["https://rpc.flashbots.net/fast"] and cfg.tx.private_method == PRIVATE
    assert _config([]).tx.private_fallback is False and _config([]).tx.private_method == RAW
    with pytest.raises(ConfigError, match="tx.private_rpc_urls"):
        _config(["wss://relay.example"])
    with pytest.raises(ConfigError, match="tx.private_method"):
        _config([], private_method="eth_sendBundle")
