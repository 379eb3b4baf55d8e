#!/usr/bin/env bash
# pgbench and result streaming: `sluice serve` against a real PostgreSQL on loopback, over
# the same small table. Prints tps of each and the ratio, and the time to stream 1M rows to
# psql from each; then a soak: 64 psycopg clients x 60 s of mixed queries against sluice
# serving the example project (tps, p50/p99 latency, errors).
#   benches/serve.sh [path/to/sluice]      ROWS=1000 SOAK_SECONDS=60 SOAK_CLIENTS=64
set -euo pipefail
bin=$(realpath "${1:-target/release/sluice}")
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pg_bin" ] || ! command -v pgbench >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq postgresql postgresql-client
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
work=$(mktemp -d); chmod 777 "$work"
pg_port=55432; sl_port=55433
cleanup() {
  [ -n "${sl_pid:-}" ] && kill "$sl_pid" 2>/dev/null || true
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The same table for both (1,000 rows unless ROWS says).
rows=${ROWS:-1000}
python3 - "$work" "$rows" <<'PY'
import sys, random
ids = list(range(1, int(sys.argv[2]) + 1))
random.Random(7).shuffle(ids)  # in no order, as exports come
with open(sys.argv[1] + "/people.csv", "w") as f:
    f.write("id,name,country\n")
    for i in ids:
        f.write(f"{i},user{i},{['KR','US','JP'][i % 3]}\n")
PY
mkdir -p "$work/project"
printf '[sources.people]\nlocation = "%s/people.csv"\n' "$work" > "$work/project/sluice.toml"

runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -A trust >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1" -l "$work/pg.log" start >/dev/null
sleep 2
psql -X -q -h 127.0.0.1 -p $pg_port -U postgres -c "CREATE TABLE people (id bigint, name text, country text)" \
  -c "\\copy people FROM '$work/people.csv' CSV HEADER" postgres

"$bin" --project "$work/project" serve --listen 127.0.0.1:$sl_port 2>"$work/sluice.log" &
sl_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$sl_port) 2>/dev/null && break; sleep 0.1; done

printf '\\set id random(1, %s)\n' "$rows" > "$work/bench.sql"
printf 'SELECT name, country FROM people WHERE id = :id;\n' >> "$work/bench.sql"
tps() { # port user mode
  pgbench -n -M "$3" -c 8 -j 2 -T 10 -f "$work/bench.sql" -h 127.0.0.1 -p "$1" -U "$2" "$4" 2>/dev/null |
    awk '/^tps/ {print $3; exit}'
}
stream() { # port user db
  local t0 t1
  t0=$(date +%s.%N)
  psql -X -q -h 127.0.0.1 -p "$1" -U "$2" -c "SELECT * FROM generate_series(1, 1000000)" "$3" > /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
printf '%-28s %12s %12s %8s\n' "" "sluice" "postgresql" "ratio"
for mode in simple extended; do
  s=$(tps $sl_port sluice $mode sluice); p=$(tps $pg_port postgres $mode postgres)
  printf '%-28s %12.0f %12.0f %8.2f\n' "pgbench tps ($mode, 8 clients)" "$s" "$p" "$(echo "$s / $p" | bc -l)"
done
s=$(stream $sl_port sluice sluice); p=$(stream $pg_port postgres postgres)
printf '%-28s %12.2f %12.2f %8.2f\n' "stream 1M rows to psql (s)" "$s" "$p" "$(echo "$s / $p" | bc -l)"
echo "PostgreSQL: $("$pg_bin/postgres" --version | awk '{print $3}'), pgbench: $(pgbench --version | awk '{print $3}')"
kill "$sl_pid"; wait "$sl_pid" 2>/dev/null || true; sl_pid=""

# The soak: the example project (models as views, day-partitioned events) plus the table above.
root=$(cd "$(dirname "$0")/.." && pwd)
cp -r "$root/sql" "$work/soak"
printf '\n[sources.people]\nlocation = "%s/people.csv"\n' "$work" >> "$work/soak/sluice.toml"
python=$root/.venv/bin/python
if ! "$python" -c 'import psycopg' 2>/dev/null; then
  python=$root/.venv-bench/bin/python
  "$python" -c 'import psycopg' 2>/dev/null ||
    { python3 -m venv "$root/.venv-bench" && "$python" -m pip install --quiet 'psycopg[binary]==3.*'; }
fi
"$bin" --project "$work/soak" serve --listen 127.0.0.1:$sl_port 2>"$work/soak.log" &
sl_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$sl_port) 2>/dev/null && break; sleep 0.1; done
"$python" "$root/benches/serve_soak.py" "host=127.0.0.1 port=$sl_port user=sluice dbname=sluice" \
  "${SOAK_CLIENTS:-64}" "${SOAK_SECONDS:-60}"
