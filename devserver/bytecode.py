"""``/pyclient.zip``: the pyclient package as pages load it, sources and bytecode.

A page unpacks the zip into its Python path (PyScript's ``files``, ``js/boot.js``). With only
sources in it, every page load compiled the whole package in WebAssembly before the first
import. So the zip also carries each module's ``__pycache__/*.cpython-3XX.pyc``, compiled by
the very Pyodide the pages load (``devserver/bytecode.mjs`` under Node: the magic number and
the bytecode are that interpreter's own). Their hashes are unchecked: the zip is rebuilt from
the sources on every request and compiled again whenever one changes, so the bytecode always
matches the sources beside it (which stay for tracebacks).

The compiled zip is kept in ``.devserver/bytecode/`` by the sources' hash (with the Pyodide
version), so only the first server after an edit pays the compile (seconds). Without Node or
Pyodide the zip holds the sources alone, with a warning: pages then compile as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path

log = logging.getLogger("pyclient.devserver")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("bytecode.mjs")
COMPILE_TIMEOUT_S = 180.0  # a Pyodide boot under Node: 2-5 s here, on a busy 2-core machine
KEEP = 8  # compiled zips kept on disk (one per state of the sources)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the same sources give the same bytes, hence the same key

_lock = threading.Lock()
_built: dict[tuple[Path, str], bytes] = {}  # the last zip per checkout: sources, or sources + bytecode


def source_zip(root: Path = ROOT) -> bytes:
    """The ``pyclient`` package's sources as a zip (the same bytes for the same sources)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((root / "pyclient").rglob("*.py")):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def package_zip(root: Path = ROOT, *, bytecode: bool = True) -> bytes:
    """``/pyclient.zip``: the sources, and with ``bytecode`` their Pyodide bytecode too (built
    once per state of the sources and kept; the sources alone when it cannot be built). Blocks
    for the build: call it from a thread."""
    source = source_zip(root)
    if not bytecode:
        return source
    pyodide = root / "node_modules" / "pyodide"
    try:
        version = json.loads((pyodide / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError) as e:
        log.warning("pyclient.zip without bytecode: no Pyodide version in %s (%s)", pyodide, e)
        return source
    key = hashlib.sha256(f"pyodide {version}\n".encode() + source).hexdigest()[:32]
    with _lock:  # one build at a time; whoever waits gets its result
        built = _built.get((root, key))
        if built is None:
            built = _cached_or_compiled(root / ".devserver" / "bytecode", key, source, pyodide)
            _built.clear()
            _built[(root, key)] = built
        return built


def _cached_or_compiled(cache: Path, key: str, source: bytes, pyodide: Path) -> bytes:
    path = cache / f"{key}.zip"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        compiled = _compile(source, pyodide)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.warning("pyclient.zip without bytecode (pages compile pyclient themselves): %s", e)
        return source
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_bytes(compiled)
    os.replace(tmp, path)  # whole or absent, for another server reading it at the same time
    for old in sorted(cache.glob("*.zip"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        old.unlink(missing_ok=True)
    return compiled


def _compile(source: bytes, pyodide: Path) -> bytes:
    if not (pyodide / "pyodide.mjs").is_file():
        raise FileNotFoundError(f"{pyodide / 'pyodide.mjs'} (run `npm ci`)")
    with tempfile.TemporaryDirectory(prefix="pyclient-bytecode-") as tmp:
        given, made = Path(tmp, "source.zip"), Path(tmp, "compiled.zip")
        given.write_bytes(source)
        done = subprocess.run(
            ["node", str(SCRIPT), str(pyodide), str(given), str(made)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-4:]
            raise subprocess.SubprocessError(f"{SCRIPT.name} exited with {done.returncode}: {' / '.join(tail)}")
        compiled = made.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(compiled)) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile as e:
        raise ValueError(f"{SCRIPT.name} returned no zip: {e}") from None
    with zipfile.ZipFile(io.BytesIO(source)) as zf:
        sources = zf.namelist()
    cached = {n.rsplit(".", 2)[0] + ".py" for n in names if n.endswith(".pyc")}  # d/__pycache__/m.cpython-314.pyc
    missing = [n for n in sources if n not in names or _cache_dir_name(n) not in cached]
    if missing:
        raise ValueError(f"{SCRIPT.name} returned a zip without {missing[0]} or its bytecode")
    return compiled


def _cache_dir_name(source: str) -> str:
    """``a/b.py`` as ``a/__pycache__/b.py``: where its bytecode lies, less the interpreter tag."""
    head, _, name = source.rpartition("/")
    return f"{head}/__pycache__/{name}" if head else f"__pycache__/{name}"
