#!/usr/bin/env bash
# The delivery-pipeline benchmark: sluice vs DuckDB vs PySpark (local mode) on the same
# generated data, 2 threads each, results cross-checked, times printed as ratios.
#
#   benches/pipeline/run.sh [ROWS ...]      (default: 1000000 10000000)
#   SLUICE_ONLY=1 MEMORY_LIMIT=4G RUNS=1 benches/pipeline/run.sh 100000000   (sluice alone, bounded)
#   RUNS=5 benches/pipeline/run.sh           (runs per engine and size; default 3)
#   SHAPES="random-file" benches/pipeline/run.sh 10000000   (data shapes; default both)
#   SLUICE_BIN=/path/to/sluice benches/pipeline/run.sh      (a release binary built before)
#
# Shapes: `days` is what `sluice gen launch` writes by default (a folder per day, ids
# ascending within it); `random-file` is one large CSV file with the ids in random order,
# as users' exports arrive. Every engine runs on both, and a table is printed per shape.
#
# Each engine runs RUNS times per size and the table shows the median time (every run's
# time is printed too: this machine's speed varies by a quarter from run to run) and the
# highest peak RSS.
# Installs DuckDB and PySpark into .venv-bench, builds sluice (the dist profile), generates
# the data with `sluice gen launch` (kept under target/bench-pipeline/ between runs), and
# runs each engine once per size. Spark's time excludes the JVM start; sluice's and
# DuckDB's include their start-up. Peak RSS comes from /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${BENCH_WORK:-$root/target/bench-pipeline}
threads=2
seed=20260501
venv=$root/.venv-bench
sizes=("$@")
runs=${RUNS:-3}
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)

if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb, pyspark' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'duckdb==2.*' 'pyspark==4.*'
fi
read -r duckdb_version spark_version < <("$venv/bin/python" -c 'import duckdb, pyspark; print(duckdb.__version__, pyspark.__version__)')
command -v java >/dev/null || { echo "run.sh: PySpark needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "run.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

# SLUICE_BIN=path uses a sluice binary built before (no build here); else the shipped
# profile (dist: thin LTO) is built.
if [ -n "${SLUICE_BIN:-}" ]; then
  sluice=$SLUICE_BIN
else
  (cd "$root" && cargo build --profile dist --locked --bin sluice)
  sluice=$root/target/dist/sluice
fi
py=$venv/bin/python

# Run a command; print "seconds peak_rss_kib" of it on fd 3.
measure() {
  /usr/bin/time -f '%e %M' -o "$work/.time" "$@" >"$work/.out" 2>"$work/.err" || {
    echo "failed: $*" >&2; cat "$work/.err" >&2; exit 1; }
  cat "$work/.time"
}

# The median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# The largest of the numbers given.
largest() { printf '%s\n' "$@" | sort -g | tail -1; }

mkdir -p "$work"
shapes=(${SHAPES:-days random-file})
declare -A tables=()
for shape in "${shapes[@]}"; do
for rows in "${sizes[@]}"; do
  case $shape in
    days) dir=$work/$rows; gen_args=() ;;
    random-file) dir=$work/$rows-random-file; gen_args=(--order random --layout one-file) ;;
    *) echo "run.sh: unknown shape $shape (days, random-file)" >&2; exit 2 ;;
  esac
  if ! [ -f "$dir/data/.complete-$seed" ]; then
    rm -rf "$dir/data"
    "$sluice" gen launch --rows "$rows" --out "$dir/data" --seed "$seed" "${gen_args[@]}"
    touch "$dir/data/.complete-$seed"
  fi
  csv_mb=$(du -sm "$dir/data" | cut -f1)

  rm -rf "$dir/sluice" "$dir/duckdb-out" "$dir/spark-out"
  mkdir -p "$dir/sluice"
  cp -r "$here/project/." "$dir/sluice/"
  ln -s "$dir/data" "$dir/sluice/data"
  limit=()
  [ -z "${MEMORY_LIMIT:-}" ] || limit=(--memory-limit "$MEMORY_LIMIT")
  s_times=() s_rsss=() d_times=() d_rsss=() k_times=()
  for ((run = 1; run <= runs; run++)); do
    rm -rf "$dir/sluice/out"
    read -r t rss < <(measure "$sluice" "${limit[@]}" --project "$dir/sluice" run)
    s_times+=("$t") s_rsss+=("$rss")
  done
  s_time=$(median "${s_times[@]}") s_rss=$(largest "${s_rsss[@]}")
  if [ -n "${SLUICE_ONLY:-}" ]; then
    echo "rows=$rows data=${csv_mb}MB sluice ${s_time}s (runs: ${s_times[*]}) peak RSS $((s_rss / 1024)) MB ${MEMORY_LIMIT:+(--memory-limit $MEMORY_LIMIT)}"
    "$py" "$here/pipeline.py" check "$dir/sluice/out/delivery"
    continue
  fi
  for ((run = 1; run <= runs; run++)); do
    rm -rf "$dir/duckdb-out"
    read -r _ rss < <(measure "$py" "$here/pipeline.py" duckdb "$dir/data" "$dir/duckdb-out" "$threads")
    d_times+=("$(cat "$work/.out")") d_rsss+=("$rss")
    rm -rf "$dir/spark-out"
    measure "$py" "$here/pipeline.py" spark "$dir/data" "$dir/spark-out" "$threads" >/dev/null
    k_times+=("$(cat "$work/.out")")
  done
  d_query=$(median "${d_times[@]}") d_rss=$(largest "${d_rsss[@]}") k_query=$(median "${k_times[@]}")

  mapfile -t stats < <("$py" "$here/pipeline.py" check "$dir/sluice/out/delivery" "$dir/duckdb-out" "$dir/spark-out")
  echo "rows=$rows data=${csv_mb}MB  (rows, distinct event_id/shared_key/email/phone, sum(event_id), countries)"
  echo "  sluice: ${stats[0]}"
  echo "  duckdb: ${stats[1]}"
  echo "  spark:  ${stats[2]}"
  echo "  times (s), run by run: sluice ${s_times[*]} | duckdb ${d_times[*]} | spark ${k_times[*]}"
  if [ "${stats[0]}" != "${stats[1]}" ] || [ "${stats[0]}" != "${stats[2]}" ]; then
    echo "run.sh: the three outputs differ" >&2; exit 1
  fi
  tables[$shape]+="$(printf '%-10s %9.2f %9.2f %9.2f %8.2fx %8.2fx %10s %10s' "$rows" "$s_time" "$d_query" "$k_query" \
    "$(echo "$d_query / $s_time" | bc -l)" "$(echo "$k_query / $s_time" | bc -l)" \
    "$((s_rss / 1024))MB" "$((d_rss / 1024))MB")"$'\n'
done
done

[ ${#tables[@]} -gt 0 ] || exit 0
for shape in "${shapes[@]}"; do
  [ -n "${tables[$shape]:-}" ] || continue
  echo
  echo "shape: $shape   (sluice $("$sluice" --version | cut -d' ' -f2), DuckDB $duckdb_version, PySpark $spark_version)"
  printf '%-10s %9s %9s %9s %9s %9s %10s %10s\n' rows sluice_s duckdb_s spark_s vs_duckdb vs_spark sluice_rss duckdb_rss
  printf '%s' "${tables[$shape]}"
done
echo "(medians of $runs runs; vs_x: x's time / sluice's time; above 1 means sluice is faster)"
