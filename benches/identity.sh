#!/usr/bin/env bash
# resolve_identities at scale: N edges (default 10M) of legacy -> migrated accounts, pairs
# of legacy ids merging into one account, so N distinct legacy ids and N/2 accounts.
# Prints wall time and peak RSS of the whole sluice process.
#   benches/identity.sh [path/to/sluice] [edges] [memory-limit]
set -euo pipefail
bin=${1:-target/release/sluice}
n=${2:-10000000}
limit=${3:-4G}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '[sources.edges]\nlocation = "edges.parquet"\n' > "$dir/sluice.toml"
"$bin" --project "$dir" shell -c "COPY (SELECT 'L' || lpad(CAST(value AS VARCHAR), 10, '0') AS legacy_id, 'A' || lpad(CAST(value / 2 AS VARCHAR), 10, '0') AS account_id FROM generate_series(0, $n - 1)) TO '$dir/edges.parquet'" > /dev/null
echo "edges: $n ($(du -h "$dir/edges.parquet" | cut -f1) parquet), memory limit $limit"
/usr/bin/time -f "resolve_identities: %e s wall, peak RSS %M KiB" \
  "$bin" --project "$dir" --memory-limit "$limit" shell --format csv -c \
  "SELECT count(*) AS ids, count(DISTINCT shared_id) AS groups, max(group_size) AS largest FROM resolve_identities('edges', 'legacy_id', 'account_id')"
