"""The state file: a read-only in-memory copy for tools that must not write (nothing on disk created,
written or left behind), the migration of a state file written by an older keeper, and the attempt
journal (the row mirrors the attempt that holds the nonce)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from keeper.store import Store

# The `txs` table as the first release wrote it (no type, no cancel state, no attempts table).
OLD_SCHEMA = """
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
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS txs_status ON txs(status);
CREATE INDEX IF NOT EXISTS txs_nonce ON txs(nonce);
"""
TO = "0x" + "11" * 20


def intent(store: Store, nonce: int = 0, tx_type: str = "eip1559") -> int:
    return store.tx_intent(
        protocol="perp",
        market=TO,
        account=TO,
        kind="full",
        nonce=nonce,
        to=TO,
        data="0xabcd",
        value=0,
        gas_limit=100_000,
        max_fee=10,
        max_priority=1,
        expected_reward=5,
        expected_cost=1,
        block=7,
        tx_type=tx_type,
    )


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in the folder with its bytes and mtime (ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def written_state(path: Path) -> None:
    s = Store(path)
    s.set_meta("chain_id", "31337")
    s.put_positions("perp", [("0xm", "0xa", {"size": "1"}, 5)])
    intent(s)
    s.close()


def test_read_only_copy_reads_the_state_and_changes_nothing_on_disk(tmp_path):
    path = tmp_path / "state" / "keeper.sqlite"
    written_state(path)
    before = snapshot(path.parent)
    assert sorted(before) == ["keeper.sqlite"]  # closed cleanly: no -wal/-shm beside it
    ro = Store.read_only_copy(path)
    try:
        assert ro.get_meta("chain_id") == "31337"
        assert ro.load_positions("perp") == [("0xm", "0xa", {"size": "1"}, 5)]
        assert [r.status for r in ro.open_txs()] == ["intent"]
        # what a tool writes stays in memory
        ro.set_meta("chain_id", "1")
        ro.put_positions("perp", [("0xm", "0xb", {}, 6)])
        ro.tx_final(ro.open_txs()[0].id, "failed", reason="scan must not write")
        assert ro.get_meta("chain_id") == "1"
    finally:
        ro.close()
    assert snapshot(path.parent) == before
    again = Store(path)
    try:
        assert again.get_meta("chain_id") == "31337" and [r.status for r in again.open_txs()] == ["intent"]
    finally:
        again.close()


def test_read_only_copy_beside_a_running_keeper_sees_its_commits_and_leaves_its_files_alone(tmp_path):
    path = tmp_path / "keeper.sqlite"
    writer = Store(path)  # a running daemon: its -wal and -shm exist
    try:
        writer.set_meta("chain_id", "31337")
        intent(writer)
        before = sorted(os.listdir(tmp_path))
        main_file = (path.read_bytes(), path.stat().st_mtime_ns)
        ro = Store.read_only_copy(path)
        try:
            assert ro.get_meta("chain_id") == "31337" and len(ro.open_txs()) == 1  # committed, still in the WAL
        finally:
            ro.close()
        assert sorted(os.listdir(tmp_path)) == before
        assert (path.read_bytes(), path.stat().st_mtime_ns) == main_file
        writer.set_meta("after", "1")  # the writer is not blocked
    finally:
        writer.close()


def test_read_only_copy_of_a_missing_state_file_is_empty_and_creates_nothing(tmp_path):
    path = tmp_path / "missing" / "keeper.sqlite"
    ro = Store.read_only_copy(path)
    try:
        assert ro.get_meta("chain_id") is None and ro.open_txs() == [] and ro.cursor("perp") is None
        ro.set_meta("chain_id", "31337")  # usable, in memory
    finally:
        ro.close()
    assert list(tmp_path.iterdir()) == []


def old_state_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    cols = "protocol,market,account,kind,nonce,status,tx_hash,raw_tx,hashes,to_addr,data,gas_limit,max_fee,max_priority,created_block,created_at,updated_at"  # noqa: E501
    for nonce, raw in ((0, "0x02f87282"), (1, "0xf86c0185")):
        db.execute(
            f"INSERT INTO txs({cols}) VALUES('perp',?,?,'full',?,'sent',?,?,?,?,'0x',21000,'10','1',3,0,0)",
            (TO, TO, nonce, f"0xh{nonce}", raw, json.dumps([f"0xh{nonce}"]), TO),
        )
    db.commit()
    db.close()


def test_state_file_of_an_older_keeper_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    old_state_file(path)
    ro_before = path.read_bytes()
    ro = Store.read_only_copy(path)  # migrated in memory only
    try:
        assert [(r.nonce, r.tx_type) for r in ro.open_txs()] == [(0, "eip1559"), (1, "legacy")]
    finally:
        ro.close()
    assert path.read_bytes() == ro_before
    s = Store(path)
    try:
        r0, r1 = s.open_txs()
        assert (r0.tx_type, r1.tx_type) == ("eip1559", "legacy") and r1.legacy
        assert not r0.cancelling and r0.replacements == 0 and r0.hashes == ["0xh0"]
        s.attempt_signed(
            r0.id,
            action="cancel",
            tx_hash="0xc",
            raw="0x02aa",
            tx_type="eip1559",
            nonce=0,
            to=TO,
            data="0x",
            value=0,
            gas_limit=21_000,
            max_fee=20,
            max_priority=2,
            block=9,
        )
        assert s.tx(r0.id).cancelling
    finally:
        s.close()


def test_a_refused_attempt_leaves_the_row_mirroring_the_attempt_that_holds_the_nonce(tmp_path):
    s = Store(tmp_path / "k.sqlite")
    try:
        tx_id = intent(s)
        kw = dict(tx_type="eip1559", nonce=0, value=0, block=8)
        a1 = s.attempt_signed(
            tx_id,
            action="send",
            tx_hash="0x1",
            raw="0x02a1",
            to=TO,
            data="0xabcd",
            gas_limit=100_000,
            max_fee=10,
            max_priority=1,
            **kw,
        )
        s.attempt_sent(a1, 8)
        a2 = s.attempt_signed(
            tx_id,
            action="cancel",
            tx_hash="0x2",
            raw="0x02a2",
            to=TO,
            data="0x",
            gas_limit=21_000,
            max_fee=13,
            max_priority=2,
            **kw,
        )
        row = s.tx(tx_id)
        assert row.cancelling and row.replacements == 1 and row.tx_hash == "0x2" and row.hashes == ["0x1", "0x2"]
        s.attempt_refused(a2, "replacement transaction underpriced")
        row = s.tx(tx_id)
        assert not row.cancelling and row.replacements == 0 and row.status == "sent"
        assert (row.tx_hash, row.raw_tx, row.max_fee, row.gas_limit) == ("0x1", "0x02a1", 10, 100_000)
        assert [(a.action, a.status) for a in s.attempts(tx_id)] == [("send", "sent"), ("cancel", "refused")]
    finally:
        s.close()


@pytest.mark.parametrize("name", ["plain.sqlite", "with space?and#marks.sqlite"])
def test_read_only_copy_handles_paths_that_need_quoting_in_a_uri(tmp_path, name):
    path = tmp_path / name
    written_state(path)
    ro = Store.read_only_copy(path)
    try:
        assert ro.get_meta("chain_id") == "31337"
    finally:
        ro.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
