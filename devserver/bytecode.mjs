// Compile the pyclient package to the bytecode of the Pyodide the pages load, with that Pyodide
// itself (under Node), so a page imports pyclient without compiling it (devserver/bytecode.py).
//
//   node devserver/bytecode.mjs PYODIDE_DIR SOURCE.zip COMPILED.zip
//
// In: a zip of .py files. Out: the same files plus each one's __pycache__/*.pyc, written with
// unchecked hashes (the zip is rebuilt whenever a source changes, so they are never stale).
// Files, not stdin/stdout: Node's synchronous reads and writes of a pipe fail with EAGAIN when
// the pipe is not ready, as it is not when Python's subprocess feeds it.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [pyodideDir, sourcePath, compiledPath] = process.argv.slice(2);
if (!compiledPath) throw new Error("usage: node bytecode.mjs PYODIDE_DIR SOURCE.zip COMPILED.zip");
const dir = path.resolve(pyodideDir) + path.sep;
const { loadPyodide } = await import(pathToFileURL(dir + "pyodide.mjs"));
const py = await loadPyodide({ indexURL: dir, stdout: () => {}, stderr: (line) => console.error(line) });
py.FS.writeFile("/tmp/source.zip", readFileSync(sourcePath));
py.runPython(`
import compileall, importlib.util, py_compile, sys, zipfile

with zipfile.ZipFile("/tmp/source.zip") as zf:
    names = zf.namelist()
    zf.extractall("/tmp/pkg")
ok = compileall.compile_dir(
    "/tmp/pkg", quiet=2, workers=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
)
if not ok:
    sys.exit("compileall failed")
with zipfile.ZipFile("/tmp/compiled.zip", "w", zipfile.ZIP_DEFLATED) as out:
    for name in names:
        out.write("/tmp/pkg/" + name, name)
        if name.endswith(".py"):
            cached = importlib.util.cache_from_source("/tmp/pkg/" + name)
            out.write(cached, cached.removeprefix("/tmp/pkg/"))
`);
writeFileSync(compiledPath, py.FS.readFile("/tmp/compiled.zip"));
