"""The connection core: states, credit, readiness and the verdict on how a connection ended."""

from __future__ import annotations

import json

import pytest

from pyclient.connection import Connection, State
from pyclient.events import ServerHello, StreamDone, TextDelta
from pyclient.frames import FrameDecoder, Sequencer
from pyclient.protocols import SessionConfig, get_codec

CONFIG = SessionConfig(client={"transport": "websocket"})


def pyclient_conn(credit: bool = True) -> tuple[Connection, Sequencer]:
    conn = Connection(get_codec("pyclient"), credit=credit, credit_window=128 * 1024)
    return conn, Sequencer()


def test_pyclient_offers_credit_and_grants_its_window_first() -> None:
    conn, _ = pyclient_conn()
    assert conn.subprotocols() == ["pyclient.v1.credit", "pyclient.v1"]
    first = conn.opened("pyclient.v1.credit", CONFIG)
    frames = [f for m in first for f in FrameDecoder().feed_message(m)]
    assert [type(f).__name__ for f in frames] == ["CreditFrame", "ControlFrame"]
    assert frames[0].grant == 128 * 1024 and frames[1].type == "hello"
    assert conn.state is State.OPEN and conn.ready


def test_credit_is_returned_in_batches_as_the_sinks_consume() -> None:
    conn, seq = pyclient_conn()
    conn.opened("pyclient.v1.credit", CONFIG)
    grants = []
    for _ in range(80):
        msg = seq.text("x" * 1000)
        conn.receive(msg, len(msg))
        grants += conn.consumed(len(msg))
    # A quarter of the window at a time, never per message.
    assert 1 <= len(grants) <= 3


def test_without_credit_nothing_is_granted() -> None:
    conn, seq = pyclient_conn(credit=False)
    assert conn.subprotocols() == ["pyclient.v1"]
    conn.opened("pyclient.v1", CONFIG)
    msg = seq.text("hi")
    assert conn.receive(msg, len(msg)) == [TextDelta("hi")]
    assert conn.consumed(len(msg)) == []


def test_the_hello_sets_the_peers_limit_and_done_starts_draining() -> None:
    conn, seq = pyclient_conn()
    conn.opened("pyclient.v1", CONFIG)
    assert conn.peer_max_payload == 1024 * 1024  # the protocol's default until told
    hello = seq.control("hello", max_payload=65536)
    assert isinstance(conn.receive(hello, len(hello))[0], ServerHello)
    assert conn.peer_max_payload == 65536
    done = seq.control("done")
    assert isinstance(conn.receive(done, len(done))[0], StreamDone)
    assert conn.state is State.DRAINING and conn.done and conn.ready


@pytest.mark.parametrize(
    ("done", "by_page", "code", "unsent", "expected"),
    [
        (True, False, 1000, None, None),
        (False, True, 1000, None, None),
        (True, False, 1005, None, None),
        (False, False, 1000, None, "connection closed before the server said 'done' (code 1000: bye)"),
        (True, False, 1006, None, "connection closed abnormally (code 1006: bye)"),
        (False, True, 1011, None, "connection closed abnormally (code 1011: bye)"),
        (True, False, 1000, "closed 30 s after 'done' with 1 tool result(s) not sent", "closed 30 s after"),
    ],
)
def test_the_verdict_follows_the_protocol(
    done: bool, by_page: bool, code: int, unsent: str | None, expected: str | None
) -> None:
    conn, seq = pyclient_conn()
    conn.opened("pyclient.v1", CONFIG)
    if done:
        msg = seq.control("done")
        conn.receive(msg, len(msg))
    if by_page:
        conn.close_requested(by_page=True)
    error = conn.verdict(code, "bye", unsent=unsent)
    if expected is None:
        assert error is None and conn.state is State.CLOSED
    else:
        assert error is not None and error.startswith(expected) and conn.state is State.ERROR


def test_the_socket_verdict_comes_first_then_what_else_failed() -> None:
    conn, _ = pyclient_conn()
    conn.opened("pyclient.v1", CONFIG)
    assert conn.verdict(1006, "", error="stream failed: boom") == (
        "connection closed abnormally (code 1006); stream failed: boom"
    )


def test_protocols_without_an_end_marker_end_cleanly_on_a_server_close() -> None:
    conn = Connection(get_codec("openai-realtime"))
    assert conn.subprotocols("ek_test")[0] == "realtime"
    conn.opened("realtime", SessionConfig())
    assert conn.verdict(1000, "") is None and conn.state is State.CLOSED
    assert Connection(get_codec("openai-realtime")).verdict(1006, "") is not None


def test_gemini_holds_other_sends_until_setup_complete() -> None:
    conn = Connection(get_codec("gemini-live"))
    first = conn.opened("", SessionConfig())
    assert len(first) == 1 and "setup" in json.loads(first[0])
    assert conn.state is State.OPENING and not conn.ready
    conn.receive('{"setupComplete": {}}', 20)
    assert conn.state is State.OPEN and conn.ready


def test_unknown_types_and_bad_json_are_counted_never_fatal() -> None:
    conn = Connection(get_codec("openai-realtime"))
    conn.opened("realtime", SessionConfig())
    conn.receive('{"type": "response.brand_new_thing"}', 40)
    conn.receive("{not json", 9)
    st = conn.stats()
    assert st["ignored"] == 1 and st["malformed"] >= 1
    assert st["ignored_types"] == {"response.brand_new_thing": 1}


@pytest.mark.parametrize("samples", [480, 479, 1])
def test_each_codec_counts_the_samples_of_audio_it_would_drop(samples: int) -> None:
    """The classic transport's bounded queue counts dropped samples through the codec: the
    count matches what decoding the message would have played, in every protocol."""
    import base64

    from pyclient.events import AudioChunk

    pcm = bytes(range(256)) * (samples * 2 // 256) + bytes(samples * 2 % 256)
    b64 = base64.b64encode(pcm).decode()
    messages = {
        "pyclient": Sequencer().audio(pcm, sample_rate=24000, item_id=1),
        "openai-realtime": json.dumps(
            {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": b64}
        ),
        "gemini-live": json.dumps(
            {
                "serverContent": {
                    "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": b64}}]}
                }
            }
        ),
    }
    for name, message in messages.items():
        codec = get_codec(name)
        assert codec.droppable(message), name
        decoded = sum(e.samples for e in codec.decode(message) if isinstance(e, AudioChunk))
        assert codec.audio_samples(message) == decoded == samples, name
    assert get_codec("openai-realtime").audio_samples('{"type":"response.output_text.delta","delta":"QUJD"}') == 0
