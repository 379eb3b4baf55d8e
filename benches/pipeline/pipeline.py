"""The delivery pipeline of benches/pipeline/project/models/delivery.sql, for DuckDB and
PySpark on the same generated data, and the cross-check of the three engines' outputs.

  python pipeline.py duckdb DATA OUT THREADS   -> prints the query seconds
  python pipeline.py spark  DATA OUT THREADS   -> prints the query seconds (JVM start excluded)
  python pipeline.py check  OUT...             -> prints one stats line per output
"""
import os
import re
import sys
import time

EVENT_COLUMNS = [
    ("event_id", "BIGINT"), ("account_id", "VARCHAR"), ("event_type", "VARCHAR"),
    ("event_ts", "TIMESTAMP"), ("email", "VARCHAR"), ("phone", "VARCHAR"), ("platform", "VARCHAR"),
]

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "project", "models", "delivery.sql")


def model_sql():
    """The sluice model's SQL (its config comment removed): all three engines run it."""
    text = open(MODEL).read()
    return text[text.index("*/") + 2:].strip()


def duckdb_run(data, out, threads):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    columns = ", ".join(f"'{n}': '{t}'" for n, t in EVENT_COLUMNS)
    start = time.time()
    # Day folders (hive partitions) or one large file (`gen launch --layout one-file`).
    one_file = os.path.exists(f"{data}/launch_events/events.csv")
    files = f"{data}/launch_events/events.csv" if one_file else f"{data}/launch_events/*/*.csv"
    con.execute(f"""CREATE VIEW launch_events AS SELECT * FROM read_csv('{files}',
                    header = true, hive_partitioning = {str(not one_file).lower()}, columns = {{{columns}}})""")
    for name in ["accounts", "account_migrations", "deletion_requests"]:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{data}/{name}.csv', header = true, all_varchar = true)")
    # DuckDB's sha256 returns lowercase hex, as sha256_hex does.
    sql = model_sql().replace("sha256_hex(", "sha256(")
    assert "sha256_hex" not in sql
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, PARTITION_BY (country), OVERWRITE_OR_IGNORE)")
    return time.time() - start


def spark_run(data, out, threads):
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master(f"local[{threads}]")
             .config("spark.driver.memory", "8g")
             .config("spark.sql.shuffle.partitions", str(threads * 4))
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    schema = ", ".join(f"{n} {t.replace('VARCHAR', 'STRING')}" for n, t in EVENT_COLUMNS)
    start = time.time()
    spark.read.csv(f"{data}/launch_events", header=True, schema=schema).createOrReplaceTempView("launch_events")
    for name in ["accounts", "account_migrations", "deletion_requests"]:
        spark.read.csv(f"{data}/{name}.csv", header=True).createOrReplaceTempView(name)
    # Spark: sha2(x, 256) is the hex digest; regexp_replace replaces every match without a flag.
    sql = model_sql().replace(", '[^0-9]', '', 'g')", ", '[^0-9]', '')")
    sql = re.sub(r"sha256_hex\(((?:[^()]|\([^()]*(?:\([^()]*\))?[^()]*\))*)\)", r"sha2(\1, 256)", sql)
    assert "sha256_hex" not in sql and "'g')" not in sql, sql
    spark.sql(sql).write.mode("overwrite").partitionBy("country").parquet(out)
    elapsed = time.time() - start
    spark.stop()
    return elapsed


def check(outs):
    import duckdb
    con = duckdb.connect()
    for out in outs:
        row = con.execute(f"""SELECT count(*), count(DISTINCT event_id), count(DISTINCT shared_key),
                                     count(DISTINCT email_sha256), count(DISTINCT phone_sha256), sum(event_id),
                                     count(DISTINCT country)
                              FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)""").fetchone()
        print(" ".join(str(v) for v in row))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "duckdb":
        print(f"{duckdb_run(sys.argv[2], sys.argv[3], int(sys.argv[4])):.2f}")
    elif what == "spark":
        print(f"{spark_run(sys.argv[2], sys.argv[3], int(sys.argv[4])):.2f}")
    elif what == "check":
        check(sys.argv[2:])
    else:
        sys.exit(f"unknown command {what}")
