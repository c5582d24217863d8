"""What the test bot says and does, as plain data: importable without importing pipecat.

(Importing ``pipecat`` replaces ``asyncio.wait_for`` process-wide on Python < 3.12, with
``wait_for2``'s: the tests that only need these constants, or Pipecat's protobuf schema,
must not import it. See ``harness.load_frames_pb2``.)
"""

from __future__ import annotations

# The "LLM" answer: 30 tokens, spaces included as an LLM streams them (LLMTextFrame says so).
TOKENS: tuple[str, ...] = (
    "Hello",
    "!",
    " This",
    " is",
    " the",
    " local",
    " Pipecat",
    " test",
    " bot",
    ",",
    " streaming",
    " deterministic",
    " words",
    ":",
    " café",
    ",",
    " naïve",
    " façade",
    " and",
    " a",
    " rocket",
    " 🚀",
    " before",
    " it",
    " asks",
    " the",
    " calculator",
    " for",
    " help",
    ".",
)
TEXT = "".join(TOKENS)

OUT_SAMPLE_RATE = 24000
IN_SAMPLE_RATE = 16000
TTS_FRAME_SAMPLES = OUT_SAMPLE_RATE // 50  # 20 ms
SEGMENT_FREQUENCIES_HZ = (220.0, 330.0)

TOOL_NAME = "calculator"
TOOL_ARGUMENTS = {"expression": "17 * 23"}
TOOL_EXPECTED = 391
