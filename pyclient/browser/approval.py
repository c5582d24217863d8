"""The built-in approval dialog: the calls awaiting a decision, each with Approve and Deny.

A non-modal ``<dialog>`` (the page stays usable: the transcript keeps rendering and the
Disconnect button keeps working while a call waits), placed just before the tool cards.
Accessibility: it is labelled by its heading; the calls are a list in arrival order, each a
group named after its tool and its place ("calculator, call 2"), with buttons whose accessible
names are exactly "Approve" and "Deny".
Focus moves into the dialog when it opens (to the first call's Deny, the safe choice), moves
to the next call when one is decided, and returns where it was when the dialog closes.
Escape denies the call that has focus (else the first). Text is only ever ``textContent``.

Two event-listener proxies per dialog (clicks are delegated), destroyed in ``close()``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import js

from ..approval import ApprovalQueue, ApprovalRequest
from .jsutil import ProxyOwner

MAX_ARGS_PREVIEW_CHARS = 2000
_ids = itertools.count(1)


class ApprovalDialog:
    def __init__(self, queue: ApprovalQueue, anchor: Any = None) -> None:
        self.queue = queue
        self._owner = ProxyOwner()
        self._return_focus: Any = None
        self._entries: dict[str, Any] = {}
        self._count = 0  # calls shown so far: names calls to the same tool apart
        doc = js.document
        title_id = f"pyclient-approvals-{next(_ids)}"
        self.element = _el("dialog", "pyclient-approvals")
        self.element.setAttribute("aria-labelledby", title_id)
        title = _el("h2", "approvals-title", "Tool calls awaiting approval")
        title.id = title_id
        self._list = _el("ol", "approvals-list")
        self.element.append(title, self._list)
        if anchor is not None and anchor.parentNode is not None:
            anchor.before(self.element)
        else:
            doc.body.append(self.element)
        self.element.addEventListener("click", self._owner.proxy(self._on_click))
        self.element.addEventListener("keydown", self._owner.proxy(self._on_key))

    def add(self, request: ApprovalRequest) -> None:
        self._count += 1
        item = _el("li", "approval")
        item.dataset.callId = request.call_id
        group = _el("div", "approval-call")  # inside the <li>: the list keeps its semantics
        group.setAttribute("role", "group")
        group.setAttribute("aria-label", f"{request.name}, call {self._count}")
        text = json.dumps(request.arguments, ensure_ascii=False, indent=1)
        if len(text) > MAX_ARGS_PREVIEW_CHARS:
            text = text[:MAX_ARGS_PREVIEW_CHARS] + f"… ({len(text):,} characters)"
        note = "Runs only if you approve."
        if request.timeout is not None:
            note += f" Denied automatically after {request.timeout:g} s."
        approve = _el("button", "approve", "Approve")
        approve.type = "button"
        approve.dataset.action = "approve"
        deny = _el("button", "deny", "Deny")
        deny.type = "button"
        deny.dataset.action = "deny"
        buttons = _el("div", "approval-buttons")
        buttons.append(approve, deny)
        group.append(_el("div", "approval-name", request.name), _el("pre", "approval-args", text))
        group.append(_el("div", "approval-note", note), buttons)
        item.append(group)
        self._list.append(item)
        self._entries[request.call_id] = item
        if not self.element.open:
            active = js.document.activeElement
            self._return_focus = active if active is not None and active != js.document.body else None
            self.element.show()
            deny.focus()

    def remove(self, request: ApprovalRequest) -> None:
        item = self._entries.pop(request.call_id, None)
        if item is None:
            return
        had_focus = item.contains(js.document.activeElement)
        following = item.nextElementSibling or item.previousElementSibling
        item.remove()
        if self._entries:
            if had_focus and following is not None:
                following.querySelector("button.deny").focus()
            return
        self.element.close()
        target, self._return_focus = self._return_focus, None
        if had_focus and target is not None and target.isConnected:
            target.focus()

    def on_change(self, request: ApprovalRequest) -> None:
        """``ApprovalQueue`` listener: a request added is shown, a decided one leaves."""
        if request.pending:
            self.add(request)
        else:
            self.remove(request)

    def close(self) -> None:
        self._entries.clear()
        if self.element.open:
            self.element.close()
        self.element.remove()
        self._owner.close()

    # ------------------------------------------------------------------ events

    def _request_of(self, node: Any) -> ApprovalRequest | None:
        item = node.closest("li.approval") if node is not None and hasattr(node, "closest") else None
        return self.queue.get(str(item.dataset.callId)) if item is not None else None

    def _on_click(self, event: Any) -> None:
        button = event.target.closest("button") if hasattr(event.target, "closest") else None
        if button is None:
            return
        request = self._request_of(button)
        if request is None:
            return
        if button.dataset.action == "approve":
            request.approve()
        elif button.dataset.action == "deny":
            request.deny()

    def _on_key(self, event: Any) -> None:
        if event.key != "Escape":
            return
        event.preventDefault()
        request = self._request_of(js.document.activeElement)
        if request is None:
            pending = self.queue.pending
            request = pending[0] if pending else None
        if request is not None:
            request.deny("the user denied this call (Escape)")


def _el(tag: str, cls: str, text: str = "") -> Any:
    el = js.document.createElement(tag)
    el.className = cls
    if text:
        el.textContent = text
    return el
