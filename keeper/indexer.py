"""The one event indexer every adapter uses: a persisted cursor, paged `eth_getLogs` with an adaptive
page size, rewind after a reorg.

Page size: starts at `chain.log_page_size`; a node's "range too large / too many results" answer
halves it (down to one block) and the same range is asked again; after a run of successful pages it
doubles back toward the configured size. Any other error propagates (the block fails and is retried).
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
            end = min(head.number, start + self.page - 1)
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

    def rewind(self, block_number: int) -> None:
        """A reorg replaced blocks after `block_number`: their logs are read again."""
        self.cursor = min(self.cursor, block_number)
