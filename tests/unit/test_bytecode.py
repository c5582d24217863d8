"""/pyclient.zip's bytecode (devserver/bytecode.py): compiled by Pyodide under Node, kept per
state of the sources, never stale; without Node or Pyodide, the sources alone. That pages load
it is tests/e2e/test_startup.py's."""

from __future__ import annotations

import io
import logging
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devserver import bytecode
from devserver.bytecode import ROOT, package_zip, source_zip


def names(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def checkout(tmp_path: Path, pyodide: bool = True) -> Path:
    """A checkout to build from: a copy of pyclient's sources, and the real Pyodide."""
    shutil.copytree(ROOT / "pyclient", tmp_path / "pyclient", ignore=shutil.ignore_patterns("__pycache__"))
    if pyodide:
        (tmp_path / "node_modules").mkdir()
        (tmp_path / "node_modules" / "pyodide").symlink_to(ROOT / "node_modules" / "pyodide")
    return tmp_path


@pytest.fixture(autouse=True)
def forget_builds():
    bytecode._built.clear()
    yield
    bytecode._built.clear()


def test_every_module_comes_with_pyodides_unchecked_bytecode(tmp_path) -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "pyodide").is_dir():
        pytest.skip("needs Node and `npm ci` (./dev test does both)")
    root = checkout(tmp_path)  # nothing cached there: Pyodide under Node compiles it now
    with ThreadPoolExecutor(1) as pool:  # from a worker thread, as the server builds it
        data = pool.submit(package_zip, root).result()
    assert list((root / ".devserver" / "bytecode").glob("*.zip"))
    zf = zipfile.ZipFile(io.BytesIO(data))
    sources = [n for n in zf.namelist() if n.endswith(".py")]
    assert "pyclient/browser/client.py" in sources and sources == names(source_zip(root))
    for name in sources:
        head, _, module = name.rpartition("/")
        [pyc] = [n for n in zf.namelist() if n.startswith(f"{head}/__pycache__/{module[:-3]}.cpython-")]
        header = zf.read(pyc)[:16]
        assert header[2:4] == b"\r\n", pyc  # a magic number
        assert int.from_bytes(header[4:8], "little") == 0b01, pyc  # hash-based, hash unchecked
    assert package_zip(root) == data  # the same sources: the same zip
    assert names(package_zip(root, bytecode=False)) == sources


def test_a_changed_source_is_compiled_again_and_old_builds_are_pruned(tmp_path, monkeypatch) -> None:
    root = checkout(tmp_path)
    compiled: list[bytes] = []

    def fake_compile(source: bytes, pyodide: Path) -> bytes:  # what bytecode.mjs returns, cheaply
        compiled.append(source)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf, zipfile.ZipFile(io.BytesIO(source)) as src:
            for name in src.namelist():
                zf.writestr(name, src.read(name))
                zf.writestr(bytecode._cache_dir_name(name)[:-3] + ".cpython-314.pyc", b"pyc of " + name.encode())
        return buf.getvalue()

    monkeypatch.setattr(bytecode, "_compile", fake_compile)
    first = package_zip(root)
    assert package_zip(root) == first and len(compiled) == 1  # kept in memory
    bytecode._built.clear()
    assert package_zip(root) == first and len(compiled) == 1  # and on disk
    (root / "pyclient" / "frames.py").write_text((root / "pyclient" / "frames.py").read_text() + "\n# edited\n")
    second = package_zip(root)
    assert len(compiled) == 2 and second != first
    assert zipfile.ZipFile(io.BytesIO(second)).read("pyclient/frames.py").endswith(b"# edited\n")
    for k in range(bytecode.KEEP + 2):
        (root / "pyclient" / "extra.py").write_text(f"X = {k}\n")
        package_zip(root)
    assert len(list((root / ".devserver" / "bytecode").glob("*.zip"))) == bytecode.KEEP


def test_without_pyodide_the_zip_holds_the_sources_and_says_why(tmp_path, caplog) -> None:
    root = checkout(tmp_path, pyodide=False)
    with caplog.at_level(logging.WARNING, "pyclient.devserver"):
        data = package_zip(root)
    assert names(data) == names(source_zip(root)) and all(n.endswith(".py") for n in names(data))
    assert "without bytecode" in caplog.text


def test_a_failed_compile_serves_the_sources_and_says_why(tmp_path, monkeypatch, caplog) -> None:
    root = checkout(tmp_path)
    monkeypatch.setattr(bytecode, "SCRIPT", tmp_path / "missing.mjs")  # node fails to load it
    if shutil.which("node") is None:
        pytest.skip("needs Node")
    with caplog.at_level(logging.WARNING, "pyclient.devserver"):
        data = package_zip(root)
    assert names(data) == names(source_zip(root))
    assert "missing.mjs exited with" in caplog.text
    assert not list((root / ".devserver").glob("bytecode/*.zip"))  # nothing kept: the next server tries again
