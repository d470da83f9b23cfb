"""The benchmarks of `deenroll run` (scripts/bench.sh runs benchmark.py; benchmark.py, campaign_scaling.py and migrate_wait.py run as files too)."""
