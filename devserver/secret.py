"""The dev server's signing key: it survives restarts, so a session can outlive its server.

Resume tokens (``/ws``), Gemini resumption handles and the OpenAI emulation's item ids say
which session they continue; a restarted server trusts them only with a valid signature. The
key lives in ``.devserver/secret`` in the checkout (created on first use, mode 600, ignored by
git), or comes from ``PYCLIENT_DEV_SECRET``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNATURE_CHARS = 22
MIN_KEY_BYTES = 32


@functools.lru_cache(maxsize=1)
def dev_secret() -> bytes:
    env = os.environ.get("PYCLIENT_DEV_SECRET")
    if env:
        return env.encode()
    path = ROOT / ".devserver" / "secret"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        # Written whole under another name, then linked into place: another server starting
        # at the same time never reads a half-written key (it gets the first one linked).
        tmp = path.with_name(f"secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes()
    if len(key) < MIN_KEY_BYTES:
        raise RuntimeError(f"{path}: a signing key of {len(key)} bytes; delete the file to make a new one")
    return key


def sign(text: str) -> str:
    """A short signature of ``text`` (URL-safe)."""
    mac = hmac.new(dev_secret(), text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return mac[:SIGNATURE_CHARS]


def verify(text: str, signature: str) -> bool:
    return hmac.compare_digest(sign(text), signature)
