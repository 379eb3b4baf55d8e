#!/usr/bin/env bash
# resolve_identities at scale. Prints wall time and peak RSS of the whole sluice process.
#   benches/identity.sh [path/to/sluice] [edges] [memory-limit] [shape]
# Shapes (edges written to Parquet in random order):
#   pairs  legacy -> migrated accounts, two legacy ids per account (N ids + N/2 accounts)
#   hard   half the edges in chains of a million ids, half random among N/2 ids (a giant
#          component with average degree 2 and a tail of small groups)
# CLUSTER=N runs it on a scheduler and N one-slot executors on loopback (the memory limit
# is each executor's).
# CHECK=1 counts the groups independently with scipy's connected_components (in
# .venv-bench) and fails when they differ.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/sluice}
n=${2:-10000000}
limit=${3:-4G}
shape=${4:-pairs}
dir=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/identity.XXXXXX")
trap 'rm -rf "$dir"' EXIT
printf '[sources.edges]\nlocation = "edges.parquet"\n' > "$dir/sluice.toml"

case $shape in
  pairs)
    edges="SELECT 'L' || lpad(CAST(value AS VARCHAR), 10, '0') AS left_id, 'A' || lpad(CAST(value / 2 AS VARCHAR), 10, '0') AS right_id FROM generate_series(0, $n - 1)"
    ;;
  hard)
    # Row r of each half is edge (r * P) mod half: the rows are in random order without a
    # sort. Chain ids are a permutation of 0..=half, so text order is not chain order.
    half=$((n / 2))
    m=$((half + 1))
    edges="WITH c AS (SELECT (value * 2654435761) % $half AS i FROM generate_series(0, $half - 1)),
             g AS (SELECT value AS r FROM generate_series(0, $n - $half - 1))
           SELECT 'C' || CAST((i * 40503) % $m AS VARCHAR) AS left_id,
                  'C' || CAST((CASE WHEN (i + 1) % 1000000 = 0 THEN i ELSE i + 1 END * 40503) % $m AS VARCHAR) AS right_id FROM c
           UNION ALL
           SELECT 'G' || CAST((r * 2654435761 + 12345) % $half AS VARCHAR),
                  'G' || CAST(((r * 40503 + 7) * 2246822519) % $half AS VARCHAR) FROM g"
    ;;
  *) echo "identity.sh: unknown shape '$shape' (pairs, hard)" >&2; exit 2 ;;
esac
"$bin" --project "$dir" shell -c "COPY ($edges) TO '$dir/edges.parquet'" > /dev/null
echo "shape: $shape, edges: $n ($(du -h "$dir/edges.parquet" | cut -f1) parquet), memory limit $limit${CLUSTER:+ per executor, $CLUSTER executors}"
query="SELECT count(*) AS ids, CAST(round(sum(1.0 / group_size)) AS BIGINT) AS groups, max(group_size) AS largest FROM resolve_identities('edges', 'left_id', 'right_id')"
if [ -z "${CLUSTER:-}" ]; then
  /usr/bin/time -f "resolve_identities: %e s wall, peak RSS %M KiB" \
    "$bin" --project "$dir" --memory-limit "$limit" shell --format csv -c "$query" \
    | tee "$dir/sluice.csv"
else
  # A scheduler and CLUSTER executors of one slot each on loopback; the edges are split
  # into one partition per executor slot. Each node's peak RSS is printed when it stops.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  nodes=()
  /usr/bin/time -f "scheduler: peak RSS %M KiB" "$bin" --project "$dir" cluster scheduler \
    --bind "127.0.0.1:$port" > "$dir/scheduler.log" 2>&1 &
  nodes+=($!)
  sleep 1
  for ((i = 0; i < CLUSTER; i++)); do
    /usr/bin/time -f "executor $i: peak RSS %M KiB" "$bin" --project "$dir" --memory-limit "$limit" \
      cluster executor --scheduler "127.0.0.1:$port" --bind "127.0.0.1:$((port + 10 + 2 * i))" \
      --slots 1 --work-dir "$dir" > "$dir/executor$i.log" 2>&1 &
    nodes+=($!)
  done
  until [ "$(grep -l "registration succeed" "$dir"/executor*.log 2>/dev/null | wc -l)" = "$CLUSTER" ]; do sleep 0.2; done
  /usr/bin/time -f "resolve_identities on the cluster: %e s wall, client peak RSS %M KiB" \
    "$bin" --project "$dir" shell --cluster "df://127.0.0.1:$port" --format csv \
    -c "SET datafusion.execution.target_partitions = $CLUSTER; $query" | tee "$dir/sluice.csv"
  for pid in "${nodes[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  grep -h "peak RSS" "$dir"/scheduler.log "$dir"/executor*.log
fi

if [ "${CHECK:-0}" = 1 ]; then
  py=$root/.venv-bench/bin/python
  [ -x "$py" ] || python3 -m venv "$root/.venv-bench"
  "$py" -c 'import scipy, pyarrow' 2>/dev/null ||
    "$root/.venv-bench/bin/pip" install --quiet --disable-pip-version-check 'scipy==1.*' 'pyarrow>=15'
  "$py" - "$dir/edges.parquet" "$dir/sluice.csv" <<'EOF'
import os, sys
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

t = pq.read_table(sys.argv[1])
t = t.cast(pa.schema([(f.name, pa.string()) for f in t.schema]))
ids = pc.unique(pa.concat_arrays([pc.unique(t["left_id"]), pc.unique(t["right_id"])]))
l = pc.index_in(t["left_id"], value_set=ids).to_numpy()
r = pc.index_in(t["right_id"], value_set=ids).to_numpy()
n = len(ids)
g = coo_matrix((np.ones(len(l), dtype=np.int8), (l, r)), shape=(n, n))
groups, _ = connected_components(g, directed=False)
header, row = open(sys.argv[2]).read().split()
got = dict(zip(header.split(","), map(int, row.split(","))))
print(f"scipy: {n} ids, {groups} groups")
ok = got["ids"] == n and got["groups"] == groups
print("groups match" if ok else f"MISMATCH: sluice {got}")
sys.stdout.flush()
os._exit(0 if ok else 1)
EOF
fi
