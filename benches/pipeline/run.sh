#!/usr/bin/env bash
# The delivery-pipeline benchmark: sluice against DuckDB, Polars (streaming, polars-hash),
# ClickHouse (chdb) and PySpark (local mode) on the same generated data, 2 threads each,
# outputs cross-checked, times printed as ratios with the peers' versions.
#
#   benches/pipeline/run.sh [ROWS ...]          (default: 10000000)
#   SHAPES="random-file parquet-file" benches/pipeline/run.sh     (default: all five)
#   ENGINES="sluice duckdb polars" benches/pipeline/run.sh        (default: all five)
#   RUNS=5 benches/pipeline/run.sh              (runs per engine, shape and size; default 3)
#   SLUICE_BIN=/path/to/sluice benches/pipeline/run.sh   (a binary built before; else dist)
#   MEMORY_LIMIT=4G ENGINES="sluice duckdb" SHAPES=random-file RUNS=1 benches/pipeline/run.sh 100000000
#       (sluice under --memory-limit, DuckDB under memory_limit, the same figure)
#
# Shapes, all from `sluice gen launch` with the same seed:
#   random-file   one large CSV file, event ids in random order (users' exports)
#   days          a CSV file per day folder, ids ascending within each day
#   parquet-file  the random-order rows as one Parquet file
#   s3-parquet    64 Parquet files (day folders) on S3: a moto server on loopback
#   hot           random-order CSV with 30% of the events on 5 hot accounts (skewed keys)
# On S3, DuckDB's httpfs extension and Spark's hadoop-aws jars are not installable from the
# registries this machine reaches, so that shape runs sluice, Polars and ClickHouse.
#
# Each engine runs RUNS times, in turn (sluice, then each peer, then sluice again ...); the
# table shows medians (every run is printed: this machine's speed varies by a quarter) and
# the highest peak RSS. sluice's time is the whole `sluice run` process; the peers' times
# are their query alone (interpreter, imports and the JVM start excluded). Peak RSS comes
# from /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${BENCH_WORK:-$root/target/bench-pipeline}
threads=2
seed=20260501
venv=$root/.venv-bench
sizes=("$@")
runs=${RUNS:-3}
[ ${#sizes[@]} -gt 0 ] || sizes=(10000000)
shapes=(${SHAPES:-random-file days parquet-file s3-parquet hot})
engines=(${ENGINES:-sluice duckdb polars chdb spark})

bench_ok() { "$venv/bin/python" -c 'import duckdb, polars, polars_hash, chdb, pyspark, boto3' 2>/dev/null && [ -x "$venv/bin/moto_server" ]; }
if ! [ -x "$venv/bin/python" ] || ! bench_ok; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'duckdb==2.*' 'polars==2.*' \
    'polars-hash' 'chdb==4.*' 'pyspark==4.*' 'boto3==1.*' 'moto[server]==5.*'
  bench_ok || { echo "run.sh: could not install the peers into $venv" >&2; exit 1; }
fi
py=$venv/bin/python
versions=$("$py" "$here/pipeline.py" versions)
command -v java >/dev/null || { echo "run.sh: PySpark needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "run.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

if [ -n "${SLUICE_BIN:-}" ]; then
  sluice=$SLUICE_BIN
else
  (cd "$root" && cargo build --profile dist --locked --bin sluice)
  sluice=$root/target/dist/sluice
fi

mkdir -p "$work"
# Run a command; print "seconds peak_rss_kib" of it.
measure() {
  /usr/bin/time -f '%e %M' -o "$work/.time" "$@" >"$work/.out" 2>"$work/.err" || {
    echo "failed: $*" >&2; cat "$work/.err" >&2; exit 1; }
  cat "$work/.time"
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
largest() { printf '%s\n' "$@" | sort -g | tail -1; }

# The S3 shape's store: moto on a free loopback port, stopped on exit.
moto_pid=""
s3_endpoint=""
start_moto() {
  [ -z "$moto_pid" ] || return 0
  local port
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  moto_pid=$!
  trap 'kill $moto_pid 2>/dev/null || true' EXIT
  s3_endpoint=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -s "$s3_endpoint" >/dev/null && return 0; sleep 0.1; done
  echo "run.sh: moto_server did not start" >&2; exit 1
}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

# The project's sluice.toml with the events source for a shape.
write_project() { # shape dir
  local shape=$1 dir=$2
  rm -rf "$dir/sluice"
  mkdir -p "$dir/sluice"
  cp -r "$here/project/." "$dir/sluice/"
  ln -s "$dir/data" "$dir/sluice/data"
  local toml=$dir/sluice/sluice.toml events
  case $shape in
    days | random-file | hot) return 0 ;;
    parquet-file) events='location = "data/launch_events/events.parquet"\nformat = "parquet"' ;;
    s3-parquet) events='location = "s3://bench/launch_events/"\nformat = "parquet"' ;;
  esac
  # Replace the CSV events block (up to the next blank line) with the shape's.
  awk -v block="[sources.launch_events]\n$events" '
    /^\[sources.launch_events\]/ { print block; skip = 1; next }
    skip && /^$/ { skip = 0 }
    !skip' "$toml" >"$toml.new"
  mv "$toml.new" "$toml"
  if [ "$shape" = s3-parquet ]; then
    printf '\n[storage.s3]\nregion = "us-east-1"\nendpoint = "%s"\nallow_http = true\n' "$s3_endpoint" >>"$toml"
  fi
}

declare -A tables=()
for shape in "${shapes[@]}"; do
for rows in "${sizes[@]}"; do
  case $shape in
    days) gen_args=() ;;
    random-file) gen_args=(--order random --layout one-file) ;;
    parquet-file) gen_args=(--order random --layout one-file --format parquet) ;;
    s3-parquet) gen_args=(--order random --format parquet --days 64) ;;
    hot) gen_args=(--order random --layout one-file --hot-percent 30) ;;
    *) echo "run.sh: unknown shape $shape (random-file days parquet-file s3-parquet hot)" >&2; exit 2 ;;
  esac
  dir=$work/$rows-$shape
  if ! [ -f "$dir/data/.complete-$seed" ]; then
    rm -rf "$dir/data"
    "$sluice" gen launch --rows "$rows" --out "$dir/data" --seed "$seed" "${gen_args[@]}"
    touch "$dir/data/.complete-$seed"
  fi
  data_mb=$(du -sm "$dir/data" | cut -f1)
  peer_env=()
  if [ "$shape" = s3-parquet ]; then
    start_moto
    "$py" - "$s3_endpoint" "$dir/data/launch_events" <<'PY'
import os, sys, boto3
endpoint, folder = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
s3.create_bucket(Bucket="bench")
for day in sorted(os.listdir(folder)):
    for name in os.listdir(os.path.join(folder, day)):
        s3.upload_file(os.path.join(folder, day, name), "bench", f"launch_events/{day}/{name}")
sys.stdout.flush()
os._exit(0)
PY
    peer_env=(BENCH_EVENTS=s3://bench/launch_events/ BENCH_S3_ENDPOINT="$s3_endpoint")
  fi
  write_project "$shape" "$dir"
  limit=()
  [ -z "${MEMORY_LIMIT:-}" ] || limit=(--memory-limit "$MEMORY_LIMIT")
  declare -A times=() rss=() stats_of=()
  for engine in "${engines[@]}"; do times[$engine]=""; rss[$engine]=""; done
  for ((run = 1; run <= runs; run++)); do
    for engine in "${engines[@]}"; do
      case $engine in
        sluice)
          rm -rf "$dir/sluice/out"
          read -r t r < <(measure "$sluice" "${limit[@]}" --project "$dir/sluice" run) ;;
        duckdb | spark)
          if [ "$shape" = s3-parquet ]; then continue; fi ;&
        polars | chdb)
          rm -rf "$dir/$engine-out"
          read -r _ r < <(measure env "${peer_env[@]}" BENCH_MEMORY_LIMIT="${MEMORY_LIMIT:-}" \
            "$py" "$here/pipeline.py" "$engine" "$dir/data" "$dir/$engine-out" "$threads")
          t=$(cat "$work/.out") ;;
        *) echo "run.sh: unknown engine $engine" >&2; exit 2 ;;
      esac
      times[$engine]+="$t " rss[$engine]+="$r "
      # Each run as it ends: a failure later (the output check) loses no timing.
      echo "  $shape $rows $engine run $run: $t s, peak RSS $((r / 1024)) MB" >&2
      if [ "$run" = "$runs" ]; then
        # The output checked after the engine's last run, then removed, so that the disk
        # holds one engine's output at a time (10M: 1.5-2 GB each, 100M: 19 GB; five
        # engines on five shapes kept would need 40 GB).
        out=$dir/$engine-out checked=$dir/$engine-out
        if [ "$engine" = sluice ]; then out=$dir/sluice/out checked=$dir/sluice/out/delivery; fi
        stats_of[$engine]=$("$py" "$here/pipeline.py" check "$checked")
        rm -rf "$out"
      fi
    done
  done
  echo "shape=$shape rows=$rows data=${data_mb}MB  (rows, distinct event_id/shared_key/email/phone, sum(event_id), countries)"
  reference=""
  line="$(printf '%-12s %-10s' "$shape" "$rows")"
  for engine in "${engines[@]}"; do
    if [ -z "${times[$engine]}" ]; then line+="$(printf ' %9s %8s' - -)"; continue; fi
    stats=${stats_of[$engine]}
    echo "  $(printf '%-7s' "$engine") ${stats}   runs: ${times[$engine]}  peak RSS $(( $(largest ${rss[$engine]}) / 1024 )) MB"
    if [ -z "$reference" ]; then reference=$stats
    elif [ "$stats" != "$reference" ]; then echo "run.sh: $engine's output differs from ${engines[0]}'s" >&2; exit 1; fi
    m=$(median ${times[$engine]})
    s=$(median ${times[sluice]:-$m})
    line+="$(printf ' %9.2f %7.2fx' "$m" "$(echo "$m / $s" | bc -l)")"
  done
  line+="$(printf ' %9s' "$(( $(largest ${rss[sluice]:-0}) / 1024 ))MB")"
  tables[$shape]+="$line"$'\n'
done
done

echo
echo "sluice $("$sluice" --version | cut -d' ' -f2); $versions; $threads threads each${MEMORY_LIMIT:+; memory limit $MEMORY_LIMIT}"
header="$(printf '%-12s %-10s' shape rows)"
for engine in "${engines[@]}"; do header+="$(printf ' %9s %8s' "${engine}_s" "vs")"; done
echo "$header$(printf ' %9s' sluice_rss)"
for shape in "${shapes[@]}"; do printf '%s' "${tables[$shape]:-}"; done
echo "(medians of $runs runs; vs: the engine's time / sluice's; above 1 means sluice is faster)"
