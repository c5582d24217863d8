"""Benchmark programs: each prints a table and writes its results into docs/benchmarks/.

python -m bench screenshot     screenshots of the running demo -> docs/screenshots/
"""
