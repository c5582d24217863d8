"""Benchmark programs: each prints a table and writes its results into docs/benchmarks/.

python -m bench backpressure   how far the server runs ahead of a slow page, per transport
python -m bench bargein        interrupt-to-silence latency and position exactness, per browser
python -m bench fuzz           100,000 hostile cases per decoder: 0 exceptions
python -m bench latency        token latency under bursts, server send to the DOM: pyclient against JS
python -m bench mainthread     main-thread script time and long tasks at voice load
python -m bench load           many clients and sessions against one dev server
python -m bench reconnect      time without a socket when a connection is lost, per protocol and cut
python -m bench soak           a long session: heap and failures over time
python -m bench startup        page open to first token, against a bare Pyodide boot
python -m bench throughput     messages per second: pyclient against a JavaScript reference
python -m bench screenshot     screenshots of the running demo -> docs/screenshots/
"""
