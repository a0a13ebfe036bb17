#!/usr/bin/env bash
# One command for the /generate benchmark (`make bench` runs this with .venv/bin first on PATH):
# builds the DCGAN 64x64 model through gan-train + gan-export if needed, measures raw ONNX Runtime,
# gan-serve and LitServe with wrk, and rewrites the generated block of docs/benchmarks.md.
# Needs: wrk (apt-get install wrk) and the bench extra (pip install -e '.[bench]').
# Extra arguments go to bench/bench_generate.py (e.g. --repeats 1 --duration 10 --no-docs).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    echo "bench: wrk not found; install it (Debian/Ubuntu: apt-get install -y wrk)" >&2
    exit 2
fi
if ! python -c "import litserve" 2>/dev/null; then
    echo "bench: litserve not installed; pip install -e '.[bench]'" >&2
    exit 2
fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
python bench/bench_generate.py "$@"
python bench/train_speed.py
python bench/bench_super_resolve.py
