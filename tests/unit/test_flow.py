"""Flow control: watermarks, the bounded receive queue policy, credit windows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.errors import UsageError
from pyclient.flow import CreditBalance, CreditWindow, ReceiveQueue, Watermarks


def test_watermarks_hysteresis() -> None:
    w = Watermarks(high=100, low=20)
    assert [w.must_wait(x) for x in (0, 99, 100, 50, 21, 20, 50, 99)] == [
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(UsageError):
        Watermarks(high=10, low=20)


def test_queue_drops_oldest_audio_first_and_never_text() -> None:
    q: ReceiveQueue[str] = ReceiveQueue(max_bytes=100)
    q.push("a1", 40, droppable=True, seq=1)
    q.push("t1", 30, droppable=False, seq=2)
    q.push("a2", 30, droppable=True, seq=3)
    q.push("a3", 40, droppable=True, seq=4)  # over: drops a1 (oldest audio)
    assert [q.pop()[0] for _ in range(len(q))] == ["t1", "a2", "a3"]
    assert q.dropped_frames == 1 and q.dropped_bytes == 40
    assert q.take_dropped_seqs() == [1] and q.take_dropped_seqs() == []


def test_text_is_admitted_over_the_bound_when_no_audio_is_left() -> None:
    q: ReceiveQueue[str] = ReceiveQueue(max_bytes=50)
    q.push("t1", 40, droppable=False)
    q.push("t2", 40, droppable=False)
    assert len(q) == 2 and q.over_bound == 1 and q.dropped_frames == 0


def test_incoming_audio_is_dropped_when_only_text_is_queued() -> None:
    # How many samples a dropped message held is the protocol's business (samples_of).
    q: ReceiveQueue[str] = ReceiveQueue(max_bytes=50, samples_of=lambda item: {"a1": 10}[item])
    q.push("t1", 40, droppable=False)
    q.push("a1", 40, droppable=True, seq=9)
    assert [q.pop()[0]] == ["t1"] and q.dropped_frames == 1 and q.take_dropped_seqs() == [9]
    assert q.dropped_samples == 10


def test_messages_are_classified_only_when_the_queue_must_make_room() -> None:
    asked: list[str] = []

    def classify(item: str) -> tuple[bool, int | None]:
        asked.append(item)
        return item.startswith("a"), int(item[1:])

    q: ReceiveQueue[str] = ReceiveQueue(max_bytes=100, classify=classify)
    for item in ("a1", "t2", "a3"):
        q.push(item, 30)
    assert asked == []  # room for all: nobody looked inside
    q.push("t4", 30)  # over: what is queued is classified, once each; the oldest audio goes
    assert asked == ["a1", "t2", "a3"] and q.take_dropped_seqs() == [1]
    q.push("a5", 30)  # over again: only t4 is new to ask about; a3 is the oldest audio left
    assert asked == ["a1", "t2", "a3", "t4"] and q.take_dropped_seqs() == [3]
    q.push("a6", 40)  # a5 is the only audio queued: it goes, then a6 fits
    assert asked == ["a1", "t2", "a3", "t4", "a5"]
    assert [q.pop()[0] for _ in range(len(q))] == ["t2", "t4", "a6"]
    assert q.dropped_frames == 3


def test_a_queue_nobody_takes_from_does_not_grow_by_dropping() -> None:
    # The sinks are stuck (audio waiting for a click): every new frame drops an older one.
    q: ReceiveQueue[int] = ReceiveQueue(max_bytes=1000, classify=lambda item: (True, item))
    for i in range(10_000):
        q.push(i, 100)
    assert len(q) == 10 and q.dropped_frames == 9_990 and len(q._q) <= 2 * len(q) + 65
    assert [q.pop()[0] for _ in range(len(q))] == list(range(9_990, 10_000))


def test_a_queue_held_over_its_bound_by_text_does_not_rescan_itself() -> None:
    asked: list[int] = []

    def classify(item: int) -> tuple[bool, int | None]:
        asked.append(item)
        return False, None

    q: ReceiveQueue[int] = ReceiveQueue(max_bytes=100, classify=classify)
    for i in range(5000):  # text only: admitted over the bound, each asked about once
        q.push(i, 10)
    assert sorted(asked) == list(range(5000)) and q.over_bound == 4990 and len(q) == 5000
    assert [q.pop()[0] for _ in range(3)] == [0, 1, 2]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(20, 400), st.sampled_from([True, False, None]), st.booleans()),
        max_size=60,
    )
)
def test_queue_invariants(ops: list[tuple[int, bool | None, bool]]) -> None:
    # Audio items are >= 0, text < 0; droppable None: left to classify (told or asked: mixed).
    q: ReceiveQueue[int] = ReceiveQueue(max_bytes=1000, classify=lambda item: (item >= 0, None))
    pushed_text = 0
    popped: list[int] = []
    for i, (n, droppable, pop) in enumerate(ops):
        item = i if droppable or (droppable is None and i % 2) else -1 - i
        q.push(item, n, droppable=None if droppable is None else item >= 0, seq=i)
        pushed_text += item < 0
        if pop and len(q):
            item, _ = q.pop()
            popped.append(item)
        # Only non-droppable messages may push the queue over its bound.
        live = [e for e in q._q if not e.gone]
        audio_bytes = sum(e.nbytes for e in live if e.item >= 0)
        assert audio_bytes <= q.max_bytes
        assert q.bytes == sum(e.nbytes for e in live) and len(q) == len(live)
        assert len(q._q) <= 2 * len(q) + 65  # dropped entries do not pile up
    while len(q):
        popped.append(q.pop()[0])
    assert [x for x in popped if x < 0] == sorted((x for x in popped if x < 0), reverse=True)  # in order
    assert popped == sorted(popped, key=lambda x: x if x >= 0 else -1 - x)  # arrival order overall
    assert sum(x < 0 for x in popped) == pushed_text  # text is never dropped


def test_credit_window_batches_updates() -> None:
    w = CreditWindow(window=400_000, threshold=100_000)
    assert w.initial() == 400_000
    w.on_received(90_000)
    assert w.on_consumed(90_000) == 0
    w.on_received(20_000)
    assert w.on_consumed(20_000) == 110_000
    assert w.granted == 510_000 and w.in_flight == 400_000
    with pytest.raises(UsageError):
        CreditWindow(window=100)


def test_credit_balance_refuses_overdraft() -> None:
    b = CreditBalance()
    assert not b.can_send(1)
    b.grant(100)
    assert b.can_send(100) and not b.can_send(101)
    b.spend(60)
    with pytest.raises(UsageError, match="60 bytes with only 40"):
        b.spend(60)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.tuples(st.integers(1, 300), st.booleans()), max_size=8), st.integers(0, 6)),
        max_size=40,
    )
)
def test_push_all_and_popping_are_push_and_pop_in_one_call(ops: list[tuple[list[tuple[int, bool]], int]]) -> None:
    """Batches in, some taken out: the one-call forms leave the queue exactly as the per-item
    ones (contents, order, drops, byte counts), including drops and compactions on the way."""

    def classify(item: bytes) -> tuple[bool, int | None]:
        return item[:1] == b"a", len(item)

    one: ReceiveQueue[bytes] = ReceiveQueue(max_bytes=700, classify=classify, samples_of=len)
    each: ReceiveQueue[bytes] = ReceiveQueue(max_bytes=700, classify=classify, samples_of=len)
    taken_one: list[bytes] = []
    taken_each: list[bytes] = []
    for batch, take in ops:
        items = [(b"a" if audio else b"t") * n for n, audio in batch]
        one.push_all(items)
        for item in items:
            each.push(item, len(item))
        popping = one.popping()
        for _ in range(take):
            item = next(popping, None)
            if item is not None:
                taken_one.append(item)
            if len(each):
                taken_each.append(each.pop()[0])
        assert taken_one == taken_each
        assert one.stats() == each.stats() and len(one) == len(each)
        assert one.take_dropped_seqs() == each.take_dropped_seqs()
    assert list(one.popping()) == [each.pop()[0] for _ in range(len(each))]
    assert one.bytes == each.bytes == 0


def test_popping_takes_each_item_only_when_asked_and_survives_a_compaction() -> None:
    q: ReceiveQueue[bytes] = ReceiveQueue(max_bytes=100, classify=lambda item: (item[:1] == b"a", None))
    q.push_all([b"t1", b"a" * 40, b"t2"])
    popping = q.popping()
    assert next(popping) == b"t1" and len(q) == 2 and q.bytes == 42
    for _ in range(200):  # while the consumer waits: audio dropped for newer, the line compacted
        q.push_all([b"a" * 40])
    assert [x[:2] for x in popping] == [b"t2", b"aa", b"aa"]
    assert len(q) == 0 and q.bytes == 0
