#!/usr/bin/env bash
# Shell start-up to first result: `sluice shell -c "SELECT 1"` from a fresh process,
# compared with DuckDB's CLI-equivalent (Python package) when it is installed.
# Usage: benches/startup.sh [path/to/sluice]   (build with: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/sluice}
RUNS=${RUNS:-30}
[ -x "$BIN" ] || { echo "build $BIN first (cargo build --release)" >&2; exit 2; }
python3 - "$BIN" "$RUNS" <<'PY'
import subprocess, sys, time, statistics
binary, runs = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(runs):
    t = time.perf_counter()
    out = subprocess.run([binary, "shell", "--format", "csv", "-c", "SELECT 1 AS one"], capture_output=True, text=True)
    times.append((time.perf_counter() - t) * 1000)
    assert out.stdout == "one\n1\n", out
times.sort()
print(f"sluice SELECT 1, fresh process: median {statistics.median(times):.1f} ms, p90 {times[int(len(times)*0.9)-1]:.1f} ms over {runs} runs")
PY
