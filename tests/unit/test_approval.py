"""The approval queue: each request ends exactly one way, the bound holds, nothing leaks."""

from __future__ import annotations

import asyncio

import pytest

from pyclient.approval import (
    APPROVED,
    CANCELLED,
    DENIED,
    TIMEOUT,
    ApprovalQueue,
    ask,
    needs_approval,
)
from pyclient.errors import UsageError
from pyclient.events import ToolCallReady
from pyclient.tools import ToolExecutor, ToolRegistry

from .aio import run


def call(n: int = 1, name: str = "pay", **args) -> ToolCallReady:
    return ToolCallReady(f"call_{n}", name, args or {"amount": n})


def test_approve_and_deny_decide_once_and_are_counted() -> None:
    async def main():
        q = ApprovalQueue()
        seen = []
        q.on_change(lambda r: seen.append((r.call_id, r.decision)))
        a, b = q.add(call(1)), q.add(call(2))
        assert [r.call_id for r in q.pending] == ["call_1", "call_2"]  # arrival order
        waits = [asyncio.ensure_future(q.decision(r)) for r in (a, b)]
        await asyncio.sleep(0)
        assert a.approve() and not a.deny()  # the first decision counts
        assert b.deny("no thanks") and not b.approve()
        assert await asyncio.gather(*waits) == [APPROVED, DENIED]
        assert a.error() is None
        assert b.error() == {"type": "denied_by_user", "message": "no thanks"}
        assert len(q) == 0 and q.stats()["approved"] == 1 and q.stats()["denied"] == 1
        assert seen == [("call_1", None), ("call_2", None), ("call_1", APPROVED), ("call_2", DENIED)]

    run(main())


def test_timeout_denies_with_approval_timeout() -> None:
    async def main():
        q = ApprovalQueue()
        r = q.add(call(), timeout=0.01)
        assert await q.decision(r) == TIMEOUT
        assert r.error()["type"] == "approval_timeout" and "0.01 s" in r.error()["message"]
        s = q.stats()
        assert s["denied"] == 1 and s["approval_timeouts"] == 1 and s["awaiting_approval"] == 0

    run(main())


def test_a_cancelled_wait_leaves_the_queue_as_cancelled() -> None:
    async def main():
        q = ApprovalQueue()
        r = q.add(call())
        task = asyncio.ensure_future(q.decision(r))
        await asyncio.sleep(0)
        task.cancel()  # what the client does when the server withdraws the call
        with pytest.raises(asyncio.CancelledError):
            await task
        assert r.decision == CANCELLED and r.error() is None and len(q) == 0
        assert q.stats()["approval_cancelled"] == 1 and q.stats()["denied"] == 0
        assert not r.approve()  # too late: nothing changes

    run(main())


def test_cancel_all_ends_every_pending_request() -> None:
    async def main():
        q = ApprovalQueue()
        rs = [q.add(call(i)) for i in range(3)]
        rs[0].approve()
        assert q.cancel_all("the connection ended") == 2
        assert [r.decision for r in rs] == [APPROVED, CANCELLED, CANCELLED]
        assert rs[1].reason == "the connection ended"
        assert [await q.decision(r) for r in rs] == [APPROVED, CANCELLED, CANCELLED]

    run(main())


def test_bound_stalls_only_when_full_and_counts_it() -> None:
    async def main():
        q = ApprovalQueue(max_pending=2)
        await q.wait_for_room()  # room: no stall
        first = q.add(call(1))
        q.add(call(2))
        assert q.full
        with pytest.raises(UsageError):
            q.add(call(3))
        waiter = asyncio.ensure_future(q.wait_for_room())
        await asyncio.sleep(0.01)
        assert not waiter.done() and q.stats()["approval_stalls"] == 1
        first.deny()
        await asyncio.wait_for(waiter, 1)
        q.add(call(3))
        assert [r.call_id for r in q.pending] == ["call_2", "call_3"]

    run(main())


def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        ApprovalQueue(max_pending=0)

    async def main():
        q = ApprovalQueue()
        q.add(call(1))
        with pytest.raises(UsageError):
            q.add(call(1))  # the same call twice
        with pytest.raises(UsageError):
            q.add(call(2), timeout=0)

    run(main())


def test_a_broken_listener_does_not_lose_the_decision() -> None:
    async def main():
        q = ApprovalQueue()
        q.on_change(lambda r: 1 / 0)
        r = q.add(call())
        r.approve()
        assert await q.decision(r) == APPROVED
        assert len(q.listener_errors) == 2 and "ZeroDivisionError" in q.listener_errors[0]

    run(main())


def test_policy_callable_and_failing_safe() -> None:
    big = ToolCallReady("c", "pay", {"amount": 500})
    small = ToolCallReady("c", "pay", {"amount": 5})
    over_100 = lambda c: c.arguments["amount"] > 100  # noqa: E731
    assert needs_approval(True, small) and not needs_approval(False, big)
    assert needs_approval(over_100, big) and not needs_approval(over_100, small)
    assert needs_approval(lambda c: c.arguments["missing"], small)  # a policy that raises asks


def test_registry_options_and_executor_preflight() -> None:
    tools = ToolRegistry()

    @tools.register(needs_approval=True, approval_timeout=30)
    def pay(amount: int) -> str:
        return f"paid {amount}"

    tool = tools.get("pay")
    assert tool.needs_approval is True and tool.approval_timeout == 30
    with pytest.raises(UsageError):
        tools.register(lambda: 1, name="bad", approval_timeout=-1)
    with pytest.raises(UsageError):
        tools.register(lambda: 1, name="bad2", needs_approval="yes")
    ex = ToolExecutor(tools)
    assert ex.check(ToolCallReady("c", "pay", {"amount": 3})) is None
    assert ex.check(ToolCallReady("c", "pay", {"amount": "x"}))["type"] == "invalid_arguments"
    assert ex.check(ToolCallReady("c", "nope", {}))["type"] == "unknown_tool"
    refused = ex.refused(ToolCallReady("c", "pay", {"amount": 3}), {"type": "denied_by_user", "message": "no"})
    assert not refused.ok and refused.error == {"type": "denied_by_user", "message": "no"} and refused.result is None


def test_a_pages_own_callback_decides_sync_async_later_or_by_failing() -> None:
    async def later_ui(request):
        await asyncio.sleep(0)
        return request.arguments["amount"] < 10

    def broken(request):
        raise RuntimeError("no UI")

    async def main():
        q = ApprovalQueue()
        rs = [q.add(call(i)) for i in (1, 2, 3, 4, 50)]
        await ask(rs[0], lambda r: True)
        await ask(rs[1], lambda r: False)
        await ask(rs[2], lambda r: None)  # the page decides later
        await ask(rs[3], broken)
        await ask(rs[4], later_ui)
        assert [r.decision for r in rs] == [APPROVED, DENIED, None, DENIED, DENIED]
        assert "callback failed: RuntimeError: no UI" in rs[3].reason
        rs[2].approve()
        assert await q.decision(rs[2]) == APPROVED

    run(main())
