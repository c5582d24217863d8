"""The reconnect policy: which endings are worth another try, backoff with full jitter, a cap,
a bounded number of attempts, and a bounded history."""

from __future__ import annotations

import random

import pytest

from pyclient.errors import UsageError
from pyclient.reconnect import FINAL, RETRY, ReconnectPolicy, classify


@pytest.mark.parametrize(
    ("code", "reason", "verdict"),
    [
        (1006, "", RETRY),
        (None, "", RETRY),
        (1001, "going away", FINAL),
        (1012, "", RETRY),
        (1013, "try again later", RETRY),
        (1011, "Service unavailable", RETRY),
        (1011, "internal error", FINAL),
        (1007, "invalid argument", FINAL),
        (1008, "policy", FINAL),
        (4001, "bad credentials", FINAL),
        (4999, "", FINAL),
        (1000, "done", FINAL),
        (1005, "", FINAL),
        (3000, "", FINAL),
    ],
)
def test_classify(code: int | None, reason: str, verdict: str) -> None:
    got, why = classify(code, reason)
    assert got == verdict and why


def test_go_away_is_retried_at_once() -> None:
    p = ReconnectPolicy()
    p.opened()
    assert p.closed(1000, "", go_away=True)[0] == RETRY
    assert p.next_delay(immediate=True) == 0.0


def test_full_jitter_within_the_exponential_ceiling_and_the_cap() -> None:
    p = ReconnectPolicy(base_delay=0.5, max_delay=4.0, max_attempts=8, rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    delays = [p.next_delay() for _ in ceilings]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not in step
    assert p.next_delay() is None  # max_attempts failed attempts in a row: give up


def test_a_connection_that_works_resets_the_attempts_and_counts_a_reconnect() -> None:
    t = [100.0]
    p = ReconnectPolicy(max_attempts=2, clock=lambda: t[0])
    p.opened()
    t[0] = 101.0
    p.closed(1006)
    assert p.next_delay() is not None and p.next_delay() is not None and p.next_delay() is None
    p.opened()  # opened, but not yet known to work: a resume refused at once still counts
    assert p.attempts == 2 and p.reconnects == 1 and p.next_delay() is None
    p.confirmed()  # its first message arrived
    assert p.attempts == 0 and p.next_delay() is not None
    s = p.stats()
    assert s["reconnects"] == 1
    assert s["connections"][0] == {
        "index": 0,
        "opened_at": 100.0,
        "closed_at": 101.0,
        "code": 1006,
        "reason": "",
        "verdict": RETRY,
    }


def test_many_attempts_never_overflow() -> None:
    p = ReconnectPolicy(base_delay=0.1, max_delay=1.0, max_attempts=5000)
    assert all(0 <= p.next_delay() <= 1.0 for _ in range(5000))


def test_history_is_bounded() -> None:
    p = ReconnectPolicy(max_history=3)
    for _ in range(10):
        p.opened()
        p.closed(1006)
    assert [c["index"] for c in p.stats()["connections"]] == [7, 8, 9]
    assert p.reconnects == 9


def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        ReconnectPolicy(base_delay=0)
    with pytest.raises(UsageError):
        ReconnectPolicy(base_delay=2, max_delay=1)
    with pytest.raises(UsageError):
        ReconnectPolicy(max_attempts=-1)
