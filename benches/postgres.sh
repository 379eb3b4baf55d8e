#!/usr/bin/env bash
# PostgreSQL as a delivery target and as a source, next to the tools people use today.
#   benches/postgres.sh [path/to/sluice] [rows] [runs]
# Starts a PostgreSQL 15 server of its own on loopback (initdb, pg_ctl; as the postgres
# user when run as root), writes ROWS delivery rows (id, SHA-256 of an email, a country,
# an amount, a timestamp) as one CSV file, then times, each RUNS times in turn, medians:
#   publish  psql's \copy of the CSV into a new table, against `sluice run` of a model
#            reading the same CSV into a new table (staged, checked, published); then
#            sluice again replacing the rows of that table (the published table exists)
#   read     psycopg's COPY ... TO STDOUT (CSV) of the table into a file, against sluice
#            reading the table (the model's output, read through the database) into a
#            CSV file
# Every figure is a whole process (start-up included), measured by /usr/bin/time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/sluice}
rows=${2:-10000000}
runs=${3:-3}
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/initdb" ] || { echo "postgres.sh: PostgreSQL 15 is missing (apt install postgresql-15)" >&2; exit 1; }
dir=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/pgbench.XXXXXX")
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
  "${as_owner[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate -w stop > /dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${as_owner[@]}" "$pgbin/initdb" -D "$dir/data" -U bench --auth=trust -E UTF8 --locale=C.UTF-8 > /dev/null
"${as_owner[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/data/log" -w start \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c shared_buffers=1GB -c max_wal_size=8GB" > /dev/null
psql=(psql -h 127.0.0.1 -p "$port" -U bench -d postgres -X -q -v ON_ERROR_STOP=1)
"${psql[@]}" -c "CREATE SCHEMA delivery"

mkdir -p "$dir/project/models"
cat > "$dir/project/sluice.toml" <<EOF
[databases.warehouse]
url = { env = "BENCH_PG_URL" }
[sources.rows]
location = "$dir/rows.csv"
schema = { id = "BIGINT", email_sha256 = "VARCHAR", country = "VARCHAR", amount = "DECIMAL(12, 2)", ts = "TIMESTAMP" }
EOF
cat > "$dir/project/models/published.sql" <<'EOF'
/* @config
materialized = "table"
format = "postgres"
database = "warehouse"
location = "delivery.published"
*/
SELECT * FROM rows
EOF
export BENCH_PG_URL="postgres://bench@127.0.0.1:$port/postgres?sslmode=disable"
"$bin" --project "$dir/project" shell -c "COPY (
  SELECT value AS id, sha256_hex('user' || CAST(value * 7919 % $rows AS VARCHAR) || '@example.com') AS email_sha256,
         CASE value % 5 WHEN 0 THEN 'KR' WHEN 1 THEN 'US' WHEN 2 THEN 'JP' WHEN 3 THEN 'DE' ELSE 'BR' END AS country,
         CAST((value * 37 % 100000) / 100.0 AS DECIMAL(12, 2)) AS amount,
         to_timestamp_seconds(1767225600 + value) AS ts
  FROM range($rows)) TO '$dir/rows.csv' STORED AS CSV OPTIONS ('format.has_header' 'true')" > /dev/null
venv=$root/.venv/bin/python
[ -x "$venv" ] || venv=python3
echo "rows: $rows ($(du -h "$dir/rows.csv" | cut -f1) CSV), runs: $runs"
echo "PostgreSQL: $("$pgbin/postgres" --version)"
echo "psql: $(psql --version)"
echo "psycopg: $("$venv" -c 'import psycopg; print(psycopg.__version__)')"
echo "sluice: $("$bin" --version)"

# time_it NAME COMMAND...: one whole-process run, "seconds peak_kib" appended to $dir/NAME.
time_it() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$dir/time" bash -c "$*" > /dev/null 2> "$dir/err" || { cat "$dir/err" >&2; exit 1; }
  cat "$dir/time" >> "$dir/$name"
  echo "  $name: $(cat "$dir/time" | awk '{printf "%.2f s, peak RSS %.0f MiB", $1, $2 / 1024}')"
}

psql_copy() {
  psql -h 127.0.0.1 -p "$port" -U bench -d postgres -X -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS delivery.copied" \
    -c "CREATE TABLE delivery.copied (id bigint, email_sha256 text, country text, amount numeric(12, 2), ts timestamp)" \
    -c "\\copy delivery.copied FROM '$dir/rows.csv' (FORMAT csv, HEADER true)"
}
sluice_publish() { "$bin" --project "$dir/project" run; }
psycopg_read() {
  "$venv" -c "
import os, sys, psycopg
with psycopg.connect(os.environ['BENCH_PG_URL']) as conn, open('$dir/read.csv', 'wb') as out:
    with conn.cursor().copy('COPY delivery.published TO STDOUT (FORMAT csv)') as copy:
        for block in copy:
            out.write(block)
sys.stdout.flush(); os._exit(0)"
}
sluice_read() {
  "$bin" --project "$dir/project" shell -c "COPY (SELECT * FROM published) TO '$dir/read_sluice.csv' STORED AS CSV OPTIONS ('format.has_header' 'false')"
}
# /usr/bin/time runs programs, not functions: each runs in its own bash.
export PGOPTIONS="-c client_min_messages=warning"
export dir port bin venv BENCH_PG_URL
export -f psql_copy sluice_publish psycopg_read sluice_read

for ((i = 1; i <= runs; i++)); do
  echo "run $i"
  time_it psql_copy psql_copy
  "${psql[@]}" -c "DROP TABLE IF EXISTS delivery.published"
  time_it sluice_first_publish sluice_publish
  time_it sluice_republish sluice_publish
  time_it psycopg_read psycopg_read
  time_it sluice_read sluice_read
done

n_copied=$("${psql[@]}" -A -t -c "SELECT count(*) FROM delivery.copied")
n_published=$("${psql[@]}" -A -t -c "SELECT count(*) FROM delivery.published")
same=$("${psql[@]}" -A -t -c "SELECT count(*) FROM (SELECT * FROM delivery.copied EXCEPT SELECT * FROM delivery.published) d")
echo "rows: psql \\copy $n_copied, sluice $n_published; rows of one not in the other: $same"
[ "$n_copied" = "$rows" ] && [ "$n_published" = "$rows" ] && [ "$same" = 0 ] || { echo "postgres.sh: the tables differ" >&2; exit 1; }
[ "$(wc -l < "$dir/read.csv")" = "$rows" ] && [ "$(wc -l < "$dir/read_sluice.csv")" = "$rows" ] || {
  echo "postgres.sh: a read lost rows" >&2; exit 1; }

median() { sort -n "$dir/$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
peak() { sort -n -k2 "$dir/$1" | tail -1 | awk '{printf "%.0f", $2 / 1024}'; }
echo
printf '%-28s %10s %14s\n' "median of $runs" "seconds" "peak RSS MiB"
for name in psql_copy sluice_first_publish sluice_republish psycopg_read sluice_read; do
  printf '%-28s %10s %14s\n' "$name" "$(median "$name")" "$(peak "$name")"
done
awk -v a="$(median psql_copy)" -v b="$(median sluice_first_publish)" \
  'BEGIN {printf "publish: psql \\copy / sluice = %.2fx (above 1: sluice is faster)\n", a / b}'
awk -v a="$(median psycopg_read)" -v b="$(median sluice_read)" \
  'BEGIN {printf "read: psycopg COPY TO / sluice = %.2fx (above 1: sluice is faster)\n", a / b}'
