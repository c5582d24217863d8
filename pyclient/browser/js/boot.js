// A lean start for a pyclient page, without PyScript: Pyodide straight from `loadPyodide`,
// the pyclient package and the page's Python fetched meanwhile (and, with js/early.js, the
// session's socket opening meanwhile too), then the page's Python runs (top-level await ok).
//
//   import { boot } from "/pyclient/browser/js/boot.js";
//   await boot({ main: "./app.py" });

const ok = (response) => {
  if (!response.ok) throw new Error(`${response.url}: HTTP ${response.status}`);
  return response;
};

export async function boot({ main, pyodide = "/vendor/pyodide/", pkg = "/pyclient.zip" }) {
  const python = import(pyodide + "pyodide.mjs").then((m) => m.loadPyodide({ indexURL: pyodide }));
  const archive = fetch(pkg).then(ok).then((r) => r.arrayBuffer());
  const code = fetch(main).then(ok).then((r) => r.text());
  const py = await python;
  performance.mark("pyodide-ready");
  py.unpackArchive(await archive, "zip");  // into the working directory, which is on sys.path
  performance.mark("package-unpacked");
  return py.runPythonAsync(await code, { filename: main });
}
