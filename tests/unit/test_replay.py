"""``python -m pyclient.replay``, run as a subprocess on recorded sessions.

Fixtures (tests/unit/fixtures/*/README.md) are built from the providers' published schemas and
recordings: OpenAI from openai/openai-node ``src/resources/realtime/realtime.ts`` and
openai/openai-agents-js ``packages/agents-realtime/src/openaiRealtimeEvents.ts``; Gemini from
googleapis/js-genai ``src/types.ts`` and ``test/system/recordings/live_ML_Dev_*.websocket.log``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyclient.frames import Sequencer
from pyclient.replay import replay

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyclient.replay", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_json(protocol: str, path: Path) -> dict[str, Any]:
    proc = run("--protocol", protocol, str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.count("\n") == 1  # ONE JSON object
    return json.loads(proc.stdout)


def audio_reference(path: Path) -> tuple[int, str]:
    """Samples and sha256 of all audio in a fixture, computed without any codec."""
    sha = hashlib.sha256()
    samples = 0
    for ln in path.read_text(encoding="utf-8").split("\n"):
        if not ln:
            continue
        obj = json.loads(base64.b64decode(ln[4:]) if ln.startswith("b64:") else ln)
        chunks = []
        if obj.get("type") in ("response.output_audio.delta", "response.audio.delta"):
            chunks.append(obj["delta"])
        for part in obj.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            if "inlineData" in part:
                chunks.append(part["inlineData"]["data"])
        for data in chunks:
            pcm = base64.b64decode(data)
            sha.update(pcm)
            samples += len(pcm) // 2
    return samples, sha.hexdigest()


def test_openai_session() -> None:
    path = FIXTURES / "openai_realtime" / "session.jsonl"
    out = run_json("openai-realtime", path)
    samples, sha = audio_reference(path)
    assert out == {
        "protocol": "openai-realtime",
        "messages": 44,
        "text": "It's 18 degrees and sunny in Paris.Anything else?",
        "user_text": ["What's the weather", " in Paris?"],
        "audio": {"samples": samples, "sample_rate": 24000, "sha256": sha},
        "tool_calls": [{"id": "call_wx_001", "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}],
        "turns": 3,
        "interruptions": 2,
        "ignored": 1,
        "errors": [],
        "server_errors": [
            {"code": "response_cancel_not_active", "message": "Cancellation failed: no active response found"}
        ],
    }


def test_gemini_session_with_a_binary_frame() -> None:
    path = FIXTURES / "gemini_live" / "session.jsonl"
    out = run_json("gemini-live", path)
    samples, sha = audio_reference(path)
    assert out["audio"] == {"samples": samples, "sample_rate": 24000, "sha256": sha}
    assert samples == 16800
    assert out["text"] == "It's sunny in Redmond today.Let me"
    assert out["user_text"] == ["What is the weather", " in Redmond Washington?"]
    assert out["tool_calls"][0] == {
        "id": "function-call-5831923424298605773",
        "name": "get_current_weather",
        "arguments": {"location": "Redmond, WA"},
    }
    assert (out["messages"], out["turns"], out["interruptions"], out["ignored"], out["errors"]) == (23, 2, 1, 1, [])


def test_bad_lines_become_errors_not_tracebacks() -> None:
    out = run_json("openai-realtime", FIXTURES / "openai_realtime" / "bad_lines.jsonl")
    assert [e["line"] for e in out["errors"]] == [2, 3, 4, 5, 7, 8]
    assert out["errors"][3]["error"].startswith("bad b64: line")
    assert out["text"] == "ok"  # the event in a binary frame (line 6) decoded
    out = run_json("gemini-live", FIXTURES / "gemini_live" / "bad_lines.jsonl")
    assert [e["line"] for e in out["errors"]] == [2, 3, 4, 6, 7, 8]
    assert out["text"] == "binary ok"


def test_pyclient_protocol(tmp_path: Path) -> None:
    seq = Sequencer()
    pcm = bytes(range(100))
    message = seq.text("héllo ") + seq.audio(pcm, sample_rate=16000, item_id=1, final=True) + seq.text("world")
    path = tmp_path / "session.txt"
    path.write_text("b64:" + base64.b64encode(message).decode() + "\nnot binary\n", encoding="utf-8")
    out = run_json("pyclient", path)
    assert out["text"] == "héllo world"
    assert out["audio"] == {"samples": 50, "sample_rate": 16000, "sha256": hashlib.sha256(pcm).hexdigest()}
    assert out["messages"] == 2 and [e["line"] for e in out["errors"]] == [2]


def test_unreadable_file_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run("--protocol", "gemini-live", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "cannot read" in proc.stderr
    proc = run("--protocol", "nope", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2  # argparse: a usage error


def test_in_process_and_lone_surrogates(tmp_path: Path) -> None:
    line = json.dumps({"type": "response.output_text.delta", "delta": "a\ud800b"})  # a lone surrogate escape
    session = [json.dumps({"type": "session.created", "session": {"output_modalities": ["text"]}}), line]
    assert replay("openai-realtime", session)["text"] == "a\ud800b"
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(session) + "\n", encoding="utf-8")
    assert run_json("openai-realtime", path)["text"] == "a\ud800b"  # still valid JSON on stdout
