"""Durable state in SQLite: block cursor (with hashes, for reorgs), the adapters' position index,
and the transaction journal.

The journal row of a transaction is written *before* it is signed and sent
(intent → signed → sent → mined | reverted | cancelled | dropped | failed), so a restart can
reconcile every nonce the keeper ever used and never resend one that is pending or mined.
Big integers are stored as decimal TEXT.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (protocol TEXT PRIMARY KEY, block INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL, parent_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    protocol TEXT NOT NULL, market TEXT NOT NULL, account TEXT NOT NULL,
    data TEXT NOT NULL, block INTEGER NOT NULL,
    PRIMARY KEY (protocol, market, account)
);
CREATE TABLE IF NOT EXISTS txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    protocol TEXT NOT NULL, market TEXT NOT NULL, account TEXT NOT NULL, kind TEXT NOT NULL,
    nonce INTEGER NOT NULL, status TEXT NOT NULL,
    tx_hash TEXT, raw_tx TEXT, hashes TEXT NOT NULL DEFAULT '[]',
    to_addr TEXT NOT NULL, data TEXT NOT NULL, value TEXT NOT NULL DEFAULT '0',
    gas_limit INTEGER NOT NULL, max_fee TEXT NOT NULL, max_priority TEXT NOT NULL,
    expected_reward TEXT NOT NULL DEFAULT '0', expected_cost TEXT NOT NULL DEFAULT '0',
    created_block INTEGER NOT NULL, sent_block INTEGER, mined_block INTEGER,
    gas_used INTEGER, effective_gas_price TEXT, reward TEXT, reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    tx_type TEXT, cancelling INTEGER NOT NULL DEFAULT 0, replacements INTEGER NOT NULL DEFAULT 0,
    step TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS txs_status ON txs(status);
CREATE INDEX IF NOT EXISTS txs_nonce ON txs(nonce);
CREATE TABLE IF NOT EXISTS tx_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id INTEGER NOT NULL REFERENCES txs(id),
    action TEXT NOT NULL, status TEXT NOT NULL,
    tx_hash TEXT NOT NULL, raw_tx TEXT NOT NULL, tx_type TEXT NOT NULL, nonce INTEGER NOT NULL,
    to_addr TEXT NOT NULL, data TEXT NOT NULL, value TEXT NOT NULL, gas_limit INTEGER NOT NULL,
    max_fee TEXT NOT NULL, max_priority TEXT NOT NULL,
    block INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_attempts_tx ON tx_attempts(tx_id);
"""

# Columns added to `txs` after the first release: (name, declaration). A state file written by an older
# keeper gets them at open (ALTER TABLE ... ADD COLUMN), its rows keep their values.
_TXS_ADDED_COLUMNS = (
    ("tx_type", "TEXT"),  # 'eip1559' | 'legacy' (older rows: inferred from the signed bytes)
    ("cancelling", "INTEGER NOT NULL DEFAULT 0"),  # 1 once a cancellation (self-transfer) holds the nonce
    ("replacements", "INTEGER NOT NULL DEFAULT 0"),  # replacements/cancellations accepted at this nonce
    ("step", "TEXT NOT NULL DEFAULT ''"),  # a set-up step's identity (Plan.step), e.g. an approval's token and spender
)
TX_TYPES = ("eip1559", "legacy")
ATTEMPT_ACTIONS = ("send", "replace", "cancel")
ATTEMPT_STATUSES = ("signed", "sent", "refused")  # refused: the node definitively rejected this attempt

OPEN_STATUSES = ("intent", "signed", "sent")
FINAL_STATUSES = ("mined", "reverted", "cancelled", "dropped", "failed")


@dataclass
class TxRow:
    id: int
    protocol: str
    market: str
    account: str
    kind: str
    nonce: int
    status: str
    tx_hash: str | None
    raw_tx: str | None
    hashes: list[str]
    to_addr: str
    data: str
    value: int
    gas_limit: int
    max_fee: int
    max_priority: int
    expected_reward: int
    expected_cost: int
    created_block: int
    sent_block: int | None
    mined_block: int | None
    gas_used: int | None
    effective_gas_price: int | None
    reward: int | None
    reason: str
    tx_type: str = "eip1559"  # 'eip1559' | 'legacy'
    cancelling: bool = False  # a cancellation (self-transfer at this nonce) was signed and not refused
    replacements: int = 0
    step: str = ""

    @property
    def legacy(self) -> bool:
        return self.tx_type == "legacy"

    @property
    def key(self) -> str:
        return f"{self.protocol}:{self.market}:{self.account}"

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> TxRow:
        def big(v: Any) -> int | None:
            return int(v) if v is not None else None

        return cls(
            id=r["id"],
            protocol=r["protocol"],
            market=r["market"],
            account=r["account"],
            kind=r["kind"],
            nonce=r["nonce"],
            status=r["status"],
            tx_hash=r["tx_hash"],
            raw_tx=r["raw_tx"],
            hashes=json.loads(r["hashes"]),
            to_addr=r["to_addr"],
            data=r["data"],
            value=int(r["value"]),
            gas_limit=r["gas_limit"],
            max_fee=int(r["max_fee"]),
            max_priority=int(r["max_priority"]),
            expected_reward=int(r["expected_reward"]),
            expected_cost=int(r["expected_cost"]),
            created_block=r["created_block"],
            sent_block=r["sent_block"],
            mined_block=r["mined_block"],
            gas_used=r["gas_used"],
            effective_gas_price=big(r["effective_gas_price"]),
            reward=big(r["reward"]),
            reason=r["reason"],
            tx_type=r["tx_type"] or "eip1559",
            cancelling=bool(r["cancelling"]),
            replacements=r["replacements"],
            step=r["step"] or "",
        )


@dataclass
class AttemptRow:
    """One signed transaction at a journal row's nonce: the first send, a replacement or a cancellation."""

    id: int
    tx_id: int
    action: str  # 'send' | 'replace' | 'cancel'
    status: str  # 'signed' | 'sent' | 'refused'
    tx_hash: str
    raw_tx: str
    tx_type: str
    nonce: int
    to_addr: str
    data: str
    value: int
    gas_limit: int
    max_fee: int
    max_priority: int
    block: int
    reason: str

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> AttemptRow:
        return cls(
            id=r["id"],
            tx_id=r["tx_id"],
            action=r["action"],
            status=r["status"],
            tx_hash=r["tx_hash"],
            raw_tx=r["raw_tx"],
            tx_type=r["tx_type"],
            nonce=r["nonce"],
            to_addr=r["to_addr"],
            data=r["data"],
            value=int(r["value"]),
            gas_limit=r["gas_limit"],
            max_fee=int(r["max_fee"]),
            max_priority=int(r["max_priority"]),
            block=r["block"],
            reason=r["reason"],
        )


def _tx_type_of_raw(raw: str | None) -> str | None:
    """The type of a signed transaction from its bytes: a typed envelope starts with its type byte
    (0x02: EIP-1559), a legacy transaction with an RLP list header (≥ 0xc0)."""
    if not raw:
        return None
    head = raw[2:4] if raw.startswith("0x") else raw[:2]
    if head == "02":
        return "eip1559"
    return "legacy" if head and int(head, 16) >= 0xC0 else None


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self._prepare()

    def _prepare(self) -> None:
        self.conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a state file written by an older keeper to this schema, keeping every row."""
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(txs)")}
        added = [(name, decl) for name, decl in _TXS_ADDED_COLUMNS if name not in have]
        if not added:
            return
        with self._tx():
            for name, decl in added:
                self.conn.execute(f"ALTER TABLE txs ADD COLUMN {name} {decl}")
            for r in self.conn.execute("SELECT id, raw_tx FROM txs WHERE tx_type IS NULL").fetchall():
                tx_type = _tx_type_of_raw(r["raw_tx"])
                if tx_type is not None:
                    self.conn.execute("UPDATE txs SET tx_type=? WHERE id=?", (tx_type, r["id"]))

    @classmethod
    def read_only_copy(cls, path: str | Path) -> Store:
        """The state at `path` copied into memory, for tools that must not write (dry run, scan, check).

        The file is opened read-only (`mode=ro`) and copied with SQLite's backup API; what the tool
        changes afterwards lives in memory only. Nothing on disk is created, written or left locked:
        - no file at `path` (or no folder): an empty in-memory store;
        - no `-wal` file beside it (no keeper has it open): opened `immutable=1` as well, because a
          read-only open of a WAL database would otherwise create its `-wal`/`-shm` files (the main
          file is then complete: a writer appends to a `-wal` until it checkpoints);
        - a live (or crashed) writer, its `-wal`/`-shm` beside it: a plain read-only open that reads
          through them, under SQLite's shared read lock for the duration of the copy only. The state
          file and its `-wal` are not written; SQLite's shared-memory index (`-shm`, which the writer
          owns) records the reader, as it does for any reader.
        """
        src_path = Path(path)
        mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if str(path) != ":memory:" and src_path.is_file():
            live = Path(f"{src_path}-wal").exists() and Path(f"{src_path}-shm").exists()
            uri = src_path.resolve().as_uri() + ("?mode=ro" if live else "?mode=ro&immutable=1")
            src = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            try:
                src.execute("PRAGMA busy_timeout=10000")
                src.backup(mem)
            finally:
                src.close()
        store = cls.__new__(cls)
        store.path = str(path)
        store.conn = mem
        store.conn.row_factory = sqlite3.Row
        store._prepare()
        return store

    def close(self) -> None:
        self.conn.close()

    def _tx(self):
        return _Transaction(self.conn)

    # ---- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
        )

    # ---- cursors and block hashes -------------------------------------------------------------
    def cursor(self, protocol: str) -> tuple[int, str] | None:
        row = self.conn.execute("SELECT block, hash FROM cursors WHERE protocol=?", (protocol,)).fetchone()
        return (row["block"], row["hash"]) if row else None

    def set_cursor(self, protocol: str, block: int, block_hash: str) -> None:
        self.conn.execute(
            "INSERT INTO cursors(protocol,block,hash) VALUES(?,?,?) "
            "ON CONFLICT(protocol) DO UPDATE SET block=excluded.block, hash=excluded.hash",
            (protocol, block, block_hash),
        )

    def record_block(self, number: int, block_hash: str, parent_hash: str, keep: int = 256) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT INTO blocks(number,hash,parent_hash) VALUES(?,?,?) "
                "ON CONFLICT(number) DO UPDATE SET hash=excluded.hash, parent_hash=excluded.parent_hash",
                (number, block_hash, parent_hash),
            )
            self.conn.execute("DELETE FROM blocks WHERE number < ?", (number - keep,))

    def block_hash(self, number: int) -> str | None:
        row = self.conn.execute("SELECT hash FROM blocks WHERE number=?", (number,)).fetchone()
        return row["hash"] if row else None

    def recorded_blocks_desc(self, limit: int = -1) -> list[tuple[int, str]]:
        """Recorded (number, hash), newest first; `limit` rows at most (-1: all)."""
        cur = self.conn.execute("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT ?", (limit,))
        return [(r["number"], r["hash"]) for r in cur]

    def forget_blocks_after(self, number: int) -> None:
        with self._tx():
            self.conn.execute("DELETE FROM blocks WHERE number > ?", (number,))
            self.conn.execute("UPDATE cursors SET block=? WHERE block > ?", (number, number))

    def forget_all_blocks(self) -> None:
        self.conn.execute("DELETE FROM blocks")

    # ---- position index ------------------------------------------------------------------------
    def put_positions(self, protocol: str, rows: list[tuple[str, str, dict, int]]) -> None:
        """rows: (market, account, payload, block)."""
        if not rows:
            return
        with self._tx():
            self.conn.executemany(
                "INSERT INTO positions(protocol,market,account,data,block) VALUES(?,?,?,?,?) "
                "ON CONFLICT(protocol,market,account) DO UPDATE SET data=excluded.data, block=excluded.block",
                [(protocol, m, a, json.dumps(d), b) for m, a, d, b in rows],
            )

    def delete_positions(self, protocol: str, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        with self._tx():
            self.conn.executemany(
                "DELETE FROM positions WHERE protocol=? AND market=? AND account=?", [(protocol, m, a) for m, a in keys]
            )

    def load_positions(self, protocol: str) -> list[tuple[str, str, dict, int]]:
        cur = self.conn.execute("SELECT market, account, data, block FROM positions WHERE protocol=?", (protocol,))
        return [(r["market"], r["account"], json.loads(r["data"]), r["block"]) for r in cur]

    # ---- transaction journal -------------------------------------------------------------------
    def tx_intent(
        self,
        *,
        protocol: str,
        market: str,
        account: str,
        kind: str,
        nonce: int,
        to: str,
        data: str,
        value: int,
        gas_limit: int,
        max_fee: int,
        max_priority: int,
        expected_reward: int,
        expected_cost: int,
        block: int,
        tx_type: str = "eip1559",
        step: str = "",
    ) -> int:
        assert tx_type in TX_TYPES, tx_type
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO txs(protocol,market,account,kind,nonce,status,to_addr,data,value,gas_limit,max_fee,max_priority,"
            "expected_reward,expected_cost,created_block,created_at,updated_at,tx_type,step) "
            "VALUES(?,?,?,?,?,'intent',?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                protocol,
                market,
                account,
                kind,
                nonce,
                to,
                data,
                str(value),
                gas_limit,
                str(max_fee),
                str(max_priority),
                str(expected_reward),
                str(expected_cost),
                block,
                now,
                now,
                tx_type,
                step,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    # Attempts: every transaction signed at a row's nonce (first send, replacements, cancellations), with
    # its call and fees. The row itself mirrors the attempt that holds the nonce in the node's pool (the
    # last one not refused): its hash, bytes, fees, gas limit and whether it is a cancellation.
    def attempt_signed(
        self,
        tx_id: int,
        *,
        action: str,
        tx_hash: str,
        raw: str,
        tx_type: str,
        nonce: int,
        to: str,
        data: str,
        value: int,
        gas_limit: int,
        max_fee: int,
        max_priority: int,
        block: int,
    ) -> int:
        """Journal a signed attempt before it is broadcast (a crash after the broadcast still finds its receipt)."""
        assert action in ATTEMPT_ACTIONS and tx_type in TX_TYPES, (action, tx_type)
        row = self.tx(tx_id)
        hashes = [*row.hashes, tx_hash] if tx_hash not in row.hashes else row.hashes
        now = time.time()
        with self._tx():
            cur = self.conn.execute(
                "INSERT INTO tx_attempts(tx_id,action,status,tx_hash,raw_tx,tx_type,nonce,to_addr,data,value,gas_limit,max_fee,"
                "max_priority,block,created_at) VALUES(?,?,'signed',?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    tx_id,
                    action,
                    tx_hash,
                    raw,
                    tx_type,
                    nonce,
                    to,
                    data,
                    str(value),
                    gas_limit,
                    str(max_fee),
                    str(max_priority),
                    block,
                    now,
                ),
            )
            self.conn.execute(
                "UPDATE txs SET status=CASE WHEN status='intent' THEN 'signed' ELSE status END, tx_hash=?, raw_tx=?, hashes=?, "
                "max_fee=?, max_priority=?, gas_limit=?, tx_type=?, cancelling=?, "
                "replacements=replacements + ?, updated_at=? WHERE id=?",
                (
                    tx_hash,
                    raw,
                    json.dumps(hashes),
                    str(max_fee),
                    str(max_priority),
                    gas_limit,
                    tx_type,
                    int(action == "cancel" or row.cancelling),
                    int(action != "send"),
                    now,
                    tx_id,
                ),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def attempt_sent(self, attempt_id: int, block: int) -> None:
        """The node accepted the attempt (or may have: outcome unknown). The row is 'sent' as of `block`."""
        now = time.time()
        with self._tx():
            self.conn.execute("UPDATE tx_attempts SET status='sent' WHERE id=?", (attempt_id,))
            self.conn.execute(
                "UPDATE txs SET status='sent', sent_block=?, updated_at=? WHERE id=(SELECT tx_id FROM tx_attempts WHERE id=?)",
                (block, now, attempt_id),
            )

    def attempt_refused(self, attempt_id: int, reason: str) -> None:
        """The node definitively rejected the attempt: the row mirrors the previous attempt again (which
        still holds the nonce), or keeps the refused one's values when there is none (a refused first send)."""
        att = self.attempt(attempt_id)
        with self._tx():
            self.conn.execute("UPDATE tx_attempts SET status='refused', reason=? WHERE id=?", (reason[:300], attempt_id))
            prev = self.conn.execute(
                "SELECT * FROM tx_attempts WHERE tx_id=? AND status!='refused' AND id<? ORDER BY id DESC LIMIT 1",
                (att.tx_id, attempt_id),
            ).fetchone()
            if prev is None:
                return
            cancelling = self.conn.execute(
                "SELECT COUNT(*) AS n FROM tx_attempts WHERE tx_id=? AND status!='refused' AND action='cancel'", (att.tx_id,)
            ).fetchone()["n"]
            self.conn.execute(
                "UPDATE txs SET status=CASE WHEN status='signed' THEN 'sent' ELSE status END, tx_hash=?, raw_tx=?, max_fee=?, "
                "max_priority=?, gas_limit=?, tx_type=?, cancelling=?, replacements=MAX(0, replacements - 1), updated_at=? "
                "WHERE id=?",
                (
                    prev["tx_hash"],
                    prev["raw_tx"],
                    prev["max_fee"],
                    prev["max_priority"],
                    prev["gas_limit"],
                    prev["tx_type"],
                    int(cancelling > 0),
                    time.time(),
                    att.tx_id,
                ),
            )

    def attempt(self, attempt_id: int) -> AttemptRow:
        return AttemptRow.from_row(self.conn.execute("SELECT * FROM tx_attempts WHERE id=?", (attempt_id,)).fetchone())

    def attempts(self, tx_id: int) -> list[AttemptRow]:
        cur = self.conn.execute("SELECT * FROM tx_attempts WHERE tx_id=? ORDER BY id", (tx_id,))
        return [AttemptRow.from_row(r) for r in cur]

    def tx_sent(self, tx_id: int, block: int) -> None:
        self.conn.execute(
            "UPDATE txs SET status='sent', sent_block=COALESCE(sent_block, ?), updated_at=? WHERE id=?",
            (block, time.time(), tx_id),
        )

    def tx_final(
        self,
        tx_id: int,
        status: str,
        *,
        tx_hash: str | None = None,
        block: int | None = None,
        gas_used: int | None = None,
        effective_gas_price: int | None = None,
        reward: int | None = None,
        reason: str = "",
        kind: str | None = None,
    ) -> None:
        assert status in FINAL_STATUSES, status
        self.conn.execute(
            "UPDATE txs SET status=?, tx_hash=COALESCE(?, tx_hash), mined_block=?, gas_used=?, effective_gas_price=?, "
            "reward=?, reason=?, kind=COALESCE(?, kind), updated_at=? WHERE id=?",
            (
                status,
                tx_hash,
                block,
                gas_used,
                None if effective_gas_price is None else str(effective_gas_price),
                None if reward is None else str(reward),
                reason,
                kind,
                time.time(),
                tx_id,
            ),
        )

    def tx(self, tx_id: int) -> TxRow:
        return TxRow.from_row(self.conn.execute("SELECT * FROM txs WHERE id=?", (tx_id,)).fetchone())

    def open_txs(self) -> list[TxRow]:
        q = f"SELECT * FROM txs WHERE status IN ({','.join('?' * len(OPEN_STATUSES))}) ORDER BY nonce, id"
        return [TxRow.from_row(r) for r in self.conn.execute(q, OPEN_STATUSES)]

    def txs(self, limit: int = 1000) -> list[TxRow]:
        return [TxRow.from_row(r) for r in self.conn.execute("SELECT * FROM txs ORDER BY id DESC LIMIT ?", (limit,))]

    def annotate_tx(self, tx_id: int, *, reward: int | None = None, reason: str | None = None, kind: str | None = None) -> None:
        """Record the realised reward, failure reason or realised kind (partial/full) of a settled transaction."""
        if kind is not None:
            self.conn.execute("UPDATE txs SET kind=?, updated_at=? WHERE id=?", (kind, time.time(), tx_id))
        if reward is not None:
            self.conn.execute("UPDATE txs SET reward=?, updated_at=? WHERE id=?", (str(reward), time.time(), tx_id))
        if reason is not None:
            self.conn.execute("UPDATE txs SET reason=?, updated_at=? WHERE id=?", (reason[:300], time.time(), tx_id))

    def reopen_tx(self, tx_id: int) -> None:
        """A reorg removed the block that mined this transaction: it is pending again."""
        self.conn.execute(
            "UPDATE txs SET status='sent', mined_block=NULL, gas_used=NULL, effective_gas_price=NULL, reward=NULL, "
            "updated_at=? WHERE id=?",
            (time.time(), tx_id),
        )

    def mined_after(self, block: int) -> list[TxRow]:
        cur = self.conn.execute(
            "SELECT * FROM txs WHERE mined_block > ? AND status IN ('mined','reverted','cancelled')", (block,)
        )
        return [TxRow.from_row(r) for r in cur]

    def summary(self) -> dict:
        """What the journal says the keeper did (the source of truth for totals; reorg-safe)."""
        out: dict = {"by_status": {}, "landed": 0, "partial": 0, "full": 0, "reward": {}, "gas_cost_wei": 0}
        for r in self.conn.execute("SELECT status, COUNT(*) AS n FROM txs GROUP BY status"):
            out["by_status"][r["status"]] = r["n"]
        for r in self.conn.execute(
            "SELECT protocol, kind, reward, gas_used, effective_gas_price FROM txs WHERE status IN ('mined','reverted','cancelled')"
        ):
            if r["gas_used"] is not None:
                out["gas_cost_wei"] += r["gas_used"] * int(r["effective_gas_price"] or 0)
            if r["kind"] in ("partial", "full", "frac") and r["reward"] is not None:
                out["landed"] += 1
                out["partial" if r["kind"] in ("partial", "frac") else "full"] += 1
                out["reward"][r["protocol"]] = str(int(out["reward"].get(r["protocol"], 0)) + int(r["reward"]))
        out["gas_cost_wei"] = str(out["gas_cost_wei"])
        return out


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
