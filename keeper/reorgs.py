"""Reorg detection across any gap between the last processed block and a new head.

The daemon may skip heads (a slow block, a websocket that coalesces, a failover to a node that is
ahead). A reorg that replaced block N is then seen first at N+k, whose parent is a block the keeper
never recorded. So the check is not "head.parent == stored(head − 1)": it asks the node for its
canonical hash at the last processed block and, when that differs, walks back over the recorded
blocks (one batched read) to the newest one the node still has: the common ancestor. Deeper than
the recorded window → `history_replaced` (re-index from the start blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keeper.rpc import RpcClient, RpcError
from keeper.store import Store
from keeper.types import Block

MAX_REORG_DEPTH = 64  # recorded blocks walked back before concluding the history was replaced


@dataclass(frozen=True)
class Reorg:
    head: int
    ancestor: int | None  # None: deeper than tracked (history replaced)
    last_processed: int

    @property
    def depth(self) -> int | None:
        return None if self.ancestor is None else self.last_processed - self.ancestor


class ReorgTracker:
    def __init__(self, rpc: RpcClient, store: Store, log: Any, max_depth: int = MAX_REORG_DEPTH) -> None:
        self.rpc = rpc
        self.store = store
        self.log = log
        self.max_depth = max_depth

    async def check(self, head: Block) -> Reorg | None:
        """None when `head` extends what was processed; else where the chains diverge."""
        newest = self.store.recorded_blocks_desc(limit=1)  # the per-block path reads one row
        if not newest:
            return None
        last_n, last_hash = newest[0]
        if head.number == last_n + 1 and head.parent_hash == last_hash:
            return None  # the common case: the next block
        if head.number <= last_n and self.store.block_hash(head.number) == head.hash:
            return None  # a node behind the one we followed (failover): nothing was replaced
        if head.number > last_n + 1:  # skipped heads: usually nothing was replaced, one read tells
            blk = await self.rpc.get_block(last_n)
            if isinstance(blk, dict) and blk.get("hash") == last_hash:
                return None
        # A mismatch: compare the node's canonical hashes with what was recorded, newest first.
        window = [(n, h) for n, h in self.store.recorded_blocks_desc(limit=self.max_depth + 1) if last_n - n <= self.max_depth]
        canonical = await self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n, _ in window])
        failed = next((c for c in canonical if isinstance(c, RpcError)), None)
        if failed is not None:
            raise failed  # unknown is not "replaced": the block fails and the next one retries
        for (n, h), blk in zip(window, canonical, strict=True):
            if n >= head.number:
                continue
            if isinstance(blk, dict) and blk.get("hash") == h:
                if n == last_n:
                    return None  # the last processed block is still canonical: heads were only skipped
                return Reorg(head.number, n, last_n)
        return Reorg(head.number, None, last_n)
