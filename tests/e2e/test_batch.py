"""The receive side's JS stage (pyclient/browser/js/batch.js), in real browsers.

Messages must cross into Python a batch at a time, in order, bounded in count and bytes, and
a batch that Python is still taking must hold the next one back once it is full (that is
how backpressure reaches WebSocketStream's TCP). These checks drive the module directly with
a JavaScript ``deliver`` so that every step is decided by the test, not by the scheduler.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from devserver.harness import Server

pytestmark = pytest.mark.e2e

MODULE = "/pyclient/browser/js/batch.js"


def run(page: Page, server: Server, body: str) -> Any:
    page.goto(server.url + "/style.css")  # a document of the server's origin that runs nothing
    return page.evaluate(
        f"""async () => {{
          const B = await import({MODULE!r});
          const unpack = (layout, data, texts) => {{  // what Python's unpack_batch does
            const out = []; let off = 0, t = 0;
            for (const n of layout) {{
              if (n < 0) out.push(texts[t++]);
              else {{ out.push(Array.from(data.subarray(off, off + n))); off += n; }}
            }}
            return out;
          }};
          const tick = () => new Promise((r) => setTimeout(r, 0));
          {body}
        }}"""
    )


def test_messages_already_there_cross_as_one_batch_in_order(page: Page, server: Server) -> None:
    got = run(
        page,
        server,
        """
        const batches = [];
        const b = new B.Batcher((...args) => { batches.push(unpack(...args)); }, 100, 1 << 20);
        b.push("a"); b.push(new Uint8Array([1, 2, 3]).buffer); b.push("b");
        b.push(new Uint8Array([9, 8, 7, 6]).subarray(1, 3));  // a view: only its bytes
        const before = batches.length;
        while (!batches.length) await tick();
        return { before, batches, stats: b.stats() };
        """,
    )
    assert got["before"] == 0, "nothing crosses before the task that gathers what is there"
    assert got["batches"] == [["a", [1, 2, 3], "b", [8, 7]]]
    assert got["stats"]["batches"] == 1 and got["stats"]["messages"] == 4 and got["stats"]["pending_bytes"] == 0


def test_batches_are_bounded_in_messages_and_bytes(page: Page, server: Server) -> None:
    got = run(
        page,
        server,
        """
        const sizes = [];
        const b = new B.Batcher((layout) => { sizes.push(layout.length); }, 3, 10);
        for (let i = 0; i < 7; i++) b.push("x");         // 3 + 3 at once (full), 1 later
        b.push(new Uint8Array(25).buffer);                // over the byte bound alone
        await b.drain();
        const bytes = [];
        const c = new B.Batcher((layout) => { bytes.push(Array.from(layout)); }, 100, 10);
        c.push(new Uint8Array(6).buffer); c.push(new Uint8Array(6).buffer); c.push(new Uint8Array(1).buffer);
        await c.drain();
        return { sizes, bytes };
        """,
    )
    assert got["sizes"] == [3, 3, 2]  # the seventh "x" and the 25-byte message: one batch
    assert got["bytes"] == [[6, 6], [1]]


def test_a_full_batch_waits_while_python_is_still_taking_the_last_one(page: Page, server: Server) -> None:
    got = run(
        page,
        server,
        """
        let release;
        const delivered = [];
        const b = new B.Batcher((layout, data, texts) => {
          delivered.push(Array.from(texts));
          if (delivered.length === 1) return new Promise((r) => { release = r; });  // sinks full
        }, 2, 1 << 20);
        const first = b.push("1");
        while (!delivered.length) await tick();          // batch ["1"] is with "Python", busy
        const r2 = b.push("2");                           // room: taken at once
        const r3 = b.push("3");                           // the batch is full: wait
        let r3Resolved = false;
        r3.then(() => { r3Resolved = true; });
        for (let i = 0; i < 5; i++) await tick();
        const whileBusy = { delivered: delivered.length, r3Resolved, pending: b.stats().pending_bytes };
        release();
        await r3;
        await b.drain();
        return { first: first === undefined, r2: r2 === undefined, r3IsPromise: r3 instanceof Promise,
                 whileBusy, delivered };
        """,
    )
    assert got["first"] and got["r2"] and got["r3IsPromise"]
    assert got["whileBusy"] == {"delivered": 1, "r3Resolved": False, "pending": 2}
    assert got["delivered"] == [["1"], ["2", "3"]]


def test_a_failing_deliver_errors_the_stage_and_the_pipe(page: Page, server: Server) -> None:
    got = run(
        page,
        server,
        """
        const b = new B.Batcher(() => Promise.reject(new Error("boom")), 1, 1 << 20);
        const source = new ReadableStream({ start(c) { c.enqueue("a"); c.enqueue("b"); c.enqueue("c"); } });
        try { await source.pipeTo(B.batchingSink(b)); return "piped"; }
        catch (e) { return String(e); }
        """,
    )
    assert "boom" in got


def test_the_sink_delivers_everything_before_the_pipe_ends(page: Page, server: Server) -> None:
    got = run(
        page,
        server,
        """
        const seen = [];
        const b = new B.Batcher((layout, data, texts) => {
          seen.push(...texts);
          return tick();                                   // Python takes a while each time
        }, 4, 1 << 20);
        const n = 50;
        const source = new ReadableStream({
          start(c) { for (let i = 0; i < n; i++) c.enqueue(String(i)); c.close(); },
        });
        await source.pipeTo(B.batchingSink(b));
        const st = b.stats();
        return { inOrder: seen.join(",") === Array.from({ length: n }, (_, i) => i).join(","),
                 count: seen.length, batches: st.batches, largest: st.largest_batch };
        """,
    )
    assert got["inOrder"] and got["count"] == 50
    assert got["largest"] <= 4 and got["batches"] < 50
