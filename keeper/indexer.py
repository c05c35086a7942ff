"""The one event indexer every adapter uses: a persisted cursor, paged `eth_getLogs` with an adaptive
page size, rewind after a reorg.

Page size: starts at `chain.log_page_size`; a node's "range too large / too many results" answer
halves it (down to one block) and the same range is asked again; after a run of successful pages it
doubles back toward the configured size. Any other error propagates (the block fails and is retried).

Memory: a page's logs are one JSON answer held in full, so pages are also sized by how many logs they
hold. A catch-up starts with `FIRST_SPAN` blocks; after each page the next one spans as many blocks as
should hold about `LOG_BUDGET` logs at the density just seen (at most double the last span, never more
than the configured size). A year of sparse logs still goes 2,000 blocks a page after a few pages; a
dense range (100k positions opened in a few hundred blocks) never arrives as one 300 MB answer.
The cursor (the last block whose logs were handled) is persisted per adapter with the head's hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from keeper.rpc import RpcClient, RpcError
from keeper.store import Store
from keeper.types import Block

# Words in the answers of geth, erigon, nethermind, alchemy, infura, quicknode … to an oversized query.
_TOO_LARGE = ("range", "limit", "too many", "exceed", "size", "10000 results", "response too big", "timeout")
GROW_AFTER = 8  # successful pages before the page size doubles back
FORGET_AFTER = 8  # × GROW_AFTER successful pages before a refused size may be tried again
LOG_BUDGET = 5_000  # logs a page should hold (≈ 3 KB of Python objects each while handled)
FIRST_SPAN = 16  # blocks of a catch-up's first page, before the density is known


def is_range_error(exc: RpcError) -> bool:
    return any(w in exc.message.lower() for w in _TOO_LARGE)


class EventIndexer:
    def __init__(self, rpc: RpcClient, store: Store, name: str, *, start_block: int, page_size: int, log: Any) -> None:
        self.rpc = rpc
        self.store = store
        self.name = name
        self.start_block = start_block
        self.max_page = page_size
        self.page = page_size
        self.log = log
        self._good_pages = 0
        self._failed_at: int | None = None  # smallest page size a node refused; growth stays below it
        self.span = min(page_size, FIRST_SPAN)  # blocks the next page may span given the log density seen
        stored = store.cursor(name)
        self.cursor: int = stored[0] if stored else start_block - 1

    async def advance(
        self, head: Block, addresses: str | Sequence[str], topics: list[Any], handle: Callable[[list[dict[str, Any]]], None]
    ) -> None:
        """Read every matching log in (cursor, head] page by page, hand each page to `handle`, move and
        persist the cursor. Nothing to watch (no address) still moves the cursor."""
        address: str | list[str] = addresses if isinstance(addresses, str) else list(addresses)
        start = self.cursor + 1
        while start <= head.number and address:
            end = min(head.number, start + min(self.page, self.span) - 1)
            try:
                logs = await self.rpc.get_logs(address, topics, start, end)
            except RpcError as exc:
                if self.page > 1 and is_range_error(exc):
                    self._failed_at = min(self._failed_at or self.page, self.page)
                    self.page = max(1, self.page // 2)
                    self._good_pages = 0
                    self.log.info("log_page_reduced", page_size=self.page, error=exc.message)
                    continue
                raise
            handle(logs)
            self._fit_span(end - start + 1, len(logs))
            self.cursor = end
            start = end + 1
            self._good_pages += 1
            if self._good_pages >= GROW_AFTER * FORGET_AFTER:
                self._failed_at = None  # the node's limit may have been load or result count: try again
            ceiling = self.max_page if self._failed_at is None else min(self.max_page, self._failed_at // 2)
            if self._good_pages % GROW_AFTER == 0 and self.page < ceiling:
                self.page = min(ceiling, self.page * 2)
        self.cursor = max(self.cursor, head.number)
        self.store.set_cursor(self.name, self.cursor, head.hash)

    def _fit_span(self, span: int, logs: int) -> None:
        """The next page's span for about LOG_BUDGET logs at this page's density: at most double, ≥ 1 block."""
        fit = span * LOG_BUDGET // logs if logs else self.max_page
        self.span = max(1, min(self.max_page, 2 * span, fit)) if span >= self.span or fit < self.span else self.span

    def rewind(self, block_number: int) -> None:
        """A reorg replaced blocks after `block_number`: their logs are read again."""
        self.cursor = min(self.cursor, block_number)
