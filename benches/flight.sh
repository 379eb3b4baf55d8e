#!/usr/bin/env bash
# Flight SQL against the Postgres port of the same `sluice serve`: 10M rows of the example
# shape (`sluice gen launch`, as one Parquet file) fetched through psycopg (a server-side
# cursor) and through ADBC Flight SQL (Arrow batches), then point lookups on a 1,000-row
# table from 8 ADBC clients next to pgbench's 8 clients (extended protocol).
#   benches/flight.sh [path/to/sluice]      ROWS=10000000 CLIENTS=8 SECONDS=10
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/target/release/sluice}")
rows=${ROWS:-10000000}
clients=${CLIENTS:-8}
seconds=${SECONDS_EACH:-10}
python=$root/.venv/bin/python
"$python" -c 'import adbc_driver_flightsql, psycopg' 2>/dev/null ||
  { echo "flight.sh: run ./test.sh once (it installs ADBC and psycopg into .venv)" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "flight.sh: needs pgbench (postgresql-client)" >&2; exit 1; }
work=${BENCH_WORK:-$root/target/bench-flight}
mkdir -p "$work"
if ! [ -f "$work/data-$rows/.complete" ]; then
  rm -rf "$work/data-$rows"
  "$bin" gen launch --rows "$rows" --out "$work/data-$rows" --layout one-file --format parquet --order random >/dev/null
  touch "$work/data-$rows/.complete"
fi
"$python" - "$work/people.csv" <<'PY'
import sys, random
ids = list(range(1, 1001))
random.Random(7).shuffle(ids)
with open(sys.argv[1], "w") as f:
    f.write("id,name,country\n")
    for i in ids:
        f.write(f"{i},user{i},{['KR','US','JP'][i % 3]}\n")
PY
mkdir -p "$work/project"
cat > "$work/project/sluice.toml" <<TOML
[sources.launch_events]
location = "$work/data-$rows/launch_events/events.parquet"
format = "parquet"
[sources.people]
location = "$work/people.csv"
TOML
port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(port); flight_port=$(port)
"$bin" --project "$work/project" serve --listen 127.0.0.1:$pg_port --flight 127.0.0.1:$flight_port 2>"$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$flight_port) 2>/dev/null && break; sleep 0.1; done
echo "sluice $("$bin" --version | cut -d' ' -f2); adbc-driver-flightsql $("$python" -c 'import adbc_driver_flightsql as a; print(a.__version__)'); psycopg $("$python" -c 'import psycopg; print(psycopg.__version__)')"
"$python" "$root/benches/flight.py" "$pg_port" "$flight_port" launch_events "$rows" "$clients" "$seconds" 1000 people
printf '\\set id random(1, 1000)\nSELECT name, country FROM people WHERE id = :id;\n' > "$work/bench.sql"
tps=$(pgbench -n -M extended -c "$clients" -j 2 -T "$seconds" -f "$work/bench.sql" -h 127.0.0.1 -p "$pg_port" -U bench sluice 2>/dev/null |
  awk '/^tps/ {print $3; exit}')
echo "pgbench point lookups (extended), $clients clients, $seconds s: $tps per s"
