#!/usr/bin/env bash
# The example project (sql/) on generated data of any size: every model of `sluice run`,
# its time and rows from run_results.json, and the whole process's wall time and peak RSS.
#   benches/delivery.sh [path/to/sluice] [rows] [memory-limit]
# The data is generated once per size under $BENCH_TMP (default target/bench-delivery) and
# kept for the next run; each run builds into a fresh target folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/sluice}
rows=${2:-10000000}
limit=${3:-4G}
base=${BENCH_TMP:-$root/target/bench-delivery}
dir=$base/$rows
mkdir -p "$dir"
if [ ! -s "$dir/data/.complete" ]; then
  rm -rf "$dir/data"
  "$bin" gen launch --rows "$rows" --out "$dir/data"
  date > "$dir/data/.complete"
fi
# The project itself, pointing at the generated data.
rm -rf "$dir/project"
mkdir -p "$dir/project"
cp -r "$root/sql/models" "$dir/project/"
cp "$root/sql/sluice.toml" "$dir/project/"
ln -s "$dir/data" "$dir/project/data"
echo "delivery: $rows generated events ($(du -sh "$dir/data/launch_events" | cut -f1) of CSV), memory limit $limit"
export SLUICE_PII_KEY=${SLUICE_PII_KEY:-bench-key-not-a-secret}
status=0
/usr/bin/time -f "sluice run: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
  "$bin" --project "$dir/project" --memory-limit "$limit" run || status=$?
python3 - "$dir/project/target/run_results.json" <<'EOF'
import json, os, sys
results = json.load(open(sys.argv[1]))
for m in results["results"]:
    rows = "" if m["rows"] is None else f"{m['rows']:,} rows"
    print(f"  {m['name']:<22} {m['materialized']:<12} {m['status']:<8} {m['execution_time']:>8.1f} s  {rows}")
sys.stdout.flush()
os._exit(0)
EOF
exit $status
