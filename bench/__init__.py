"""The benchmarks of `deenroll run` (scripts/bench.sh runs benchmark.py; each module runs as a file too)."""
