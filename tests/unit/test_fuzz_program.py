"""A short run of the long fuzz program (``python -m bench fuzz``) over the protocol codecs:
0 exceptions and 0 bound violations, as its 100,000-case run must show (docs/RELIABILITY.md)."""

from __future__ import annotations

import pytest

from bench.fuzz import run_json_codec


@pytest.mark.parametrize("protocol", ["openai", "gemini", "pipecat"])
def test_protocol_codecs_survive_a_short_fuzz_run(protocol: str) -> None:
    t = run_json_codec(protocol, 2000, seed=11)
    assert (t.exceptions, t.violations) == (0, 0), t.examples[:2]
    assert t.cases == 2000 and t.protocol_errors > 0  # it did produce malformed input
