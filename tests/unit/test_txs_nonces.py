"""Nonce bookkeeping without a node: which node answers are definitive rejections, and released
nonces are reused lowest first without leaving a gap at the top of the range."""

from __future__ import annotations

import pytest

from keeper.txs import NonceManager, definitive_rejection


@pytest.mark.parametrize(
    "message",
    [
        "nonce too low",
        "Nonce too high. Expected nonce to be 3 but got 5",
        "insufficient funds for gas * price + value",
        "replacement transaction underpriced",
        "max fee per gas less than block base fee",
        "intrinsic gas too low",
        "tx fee (1.20 ether) exceeds the configured cap (1.00 ether)",
    ],
)
def test_definitive_rejections(message):
    assert definitive_rejection(message)


@pytest.mark.parametrize("message", ["internal error", "execution aborted (timeout = 5s)", "unknown error", ""])
def test_other_errors_are_not_definitive(message):
    assert not definitive_rejection(message)


def test_released_nonces_are_reused_lowest_first_and_the_top_shrinks():
    n = NonceManager(rpc=None, address="0x0")  # type: ignore[arg-type]
    assert [n.allocate() for _ in range(4)] == [0, 1, 2, 3]
    n.release(1)
    n.release(3)  # top of the range: next goes back to 3
    assert (n.next, n.released) == (3, {1})
    n.release(2)  # now 1..2 are the top: next shrinks to 1
    assert (n.next, n.released) == (1, set())
    assert [n.allocate() for _ in range(2)] == [1, 2]
    n.release(7)  # never allocated: ignored
    assert n.next == 3 and n.released == set()
