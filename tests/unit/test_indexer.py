"""The shared event indexer: adaptive page size (halve on a node's range error, grow back), cursor
persistence and rewind. The node is a fake that refuses ranges above a limit (fault injection)."""

from __future__ import annotations

from typing import Any

import pytest

from keeper import indexer
from keeper.indexer import FORGET_AFTER, GROW_AFTER, EventIndexer
from keeper.rpc import RpcError
from keeper.store import Store
from keeper.types import Block


class RangeLimitedNode:
    """eth_getLogs over blocks [0, 10_000) with one log per 100th block; ranges wider than `limit` are refused."""

    def __init__(self, limit: int, message: str = "query returned more than 10000 results"):
        self.limit = limit
        self.message = message
        self.queries: list[tuple[int, int]] = []

    async def get_logs(self, address: Any, topics: list, from_block: int, to_block: int) -> list[dict]:
        self.queries.append((from_block, to_block))
        if to_block - from_block + 1 > self.limit:
            raise RpcError(-32005, self.message)
        return [{"blockNumber": hex(b)} for b in range(from_block, to_block + 1) if b % 100 == 0]


class Quiet:
    def info(self, *_a: Any, **_k: Any) -> None:
        pass


def head(n: int) -> Block:
    return Block(n, f"0x{n:064x}", f"0x{n - 1:064x}", 0, 1, 0, 30_000_000)


async def test_the_page_halves_on_range_errors_and_every_log_is_read_once():
    node, store = RangeLimitedNode(limit=300), Store(":memory:")
    ix = EventIndexer(node, store, "p", start_block=0, page_size=2000, log=Quiet())  # type: ignore[arg-type]
    seen: list[int] = []
    await ix.advance(head(9_999), "0xabc", [], lambda logs: seen.extend(int(lg["blockNumber"], 16) for lg in logs))
    assert seen == list(range(0, 10_000, 100))  # nothing lost, nothing twice
    assert ix.page <= 300 and ix.cursor == 9_999 and store.cursor("p")[0] == 9_999


async def test_the_page_grows_back_after_a_run_of_good_pages():
    node = RangeLimitedNode(limit=50)
    ix = EventIndexer(node, Store(":memory:"), "p", start_block=0, page_size=400, log=Quiet())  # type: ignore[arg-type]
    await ix.advance(head(100), "0xabc", [], lambda logs: None)
    assert ix.page <= 50
    node.limit = 10**9  # the node recovers (or the busy period passed): the refused size is retried later
    await ix.advance(head(100 + 50 * GROW_AFTER * (FORGET_AFTER + 2)), "0xabc", [], lambda logs: None)
    assert ix.page > 50


async def test_other_errors_propagate_and_the_cursor_stays():
    node = RangeLimitedNode(limit=1, message="header not found")
    ix = EventIndexer(node, Store(":memory:"), "p", start_block=10, page_size=100, log=Quiet())  # type: ignore[arg-type]
    with pytest.raises(RpcError):
        await ix.advance(head(500), "0xabc", [], lambda logs: None)
    assert ix.cursor == 9


async def test_rewind_and_restart_from_the_persisted_cursor():
    node, store = RangeLimitedNode(limit=10**9), Store(":memory:")
    ix = EventIndexer(node, store, "p", start_block=0, page_size=1000, log=Quiet())  # type: ignore[arg-type]
    await ix.advance(head(500), "0xabc", [], lambda logs: None)
    ix.rewind(420)
    seen: list[int] = []
    await ix.advance(head(505), "0xabc", [], lambda logs: seen.extend(int(lg["blockNumber"], 16) for lg in logs))
    assert seen == [500] and node.queries[-1] == (421, 505)
    again = EventIndexer(node, store, "p", start_block=0, page_size=1000, log=Quiet())  # type: ignore[arg-type]
    assert again.cursor == 505


class DenseNode:
    """eth_getLogs over [0, blocks) with `per_block` logs in every block; records each answer's size."""

    def __init__(self, per_block: int):
        self.per_block = per_block
        self.answers: list[tuple[int, int, int]] = []  # (from, to, logs)

    async def get_logs(self, address: Any, topics: list, from_block: int, to_block: int) -> list[dict]:
        logs = [
            {"blockNumber": hex(b), "logIndex": hex(i)} for b in range(from_block, to_block + 1) for i in range(self.per_block)
        ]
        self.answers.append((from_block, to_block, len(logs)))
        return logs


async def test_pages_are_sized_by_log_count_so_a_dense_range_never_arrives_in_one_answer(monkeypatch):
    monkeypatch.setattr(indexer, "LOG_BUDGET", 500)
    node = DenseNode(per_block=20)
    seen: list[int] = []
    ix = EventIndexer(node, Store(":memory:"), "p", start_block=0, page_size=2000, log=Quiet())  # type: ignore[arg-type]
    await ix.advance(head(1999), "0xabc", [], lambda logs: seen.extend(int(x["blockNumber"], 16) for x in logs))
    assert seen == [b for b in range(2000) for _ in range(20)]  # every log once, in order
    assert max(n for _, _, n in node.answers) <= 500  # 40,000 logs, never more than the budget in one answer
    assert node.answers[0][:2] == (0, indexer.FIRST_SPAN - 1)
    assert ix.cursor == 1999


async def test_sparse_logs_still_grow_to_the_configured_page_within_a_few_pages():
    node = RangeLimitedNode(limit=10**9)
    ix = EventIndexer(node, Store(":memory:"), "p", start_block=0, page_size=2000, log=Quiet())  # type: ignore[arg-type]
    await ix.advance(head(9_999), "0xabc", [], lambda logs: None)
    spans = [b - a + 1 for a, b in node.queries]
    assert spans[:8] == [16, 32, 64, 128, 256, 512, 1024, 2000]
    assert len(node.queries) <= 8 + 10_000 // 2000
