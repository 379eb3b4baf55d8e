"""The delivery pipeline of benches/pipeline/project/models/delivery.sql, for DuckDB and
PySpark on the same generated data, and the cross-check of the three engines' outputs.

  python pipeline.py duckdb DATA OUT THREADS   -> prints the query seconds
  python pipeline.py spark  DATA OUT THREADS   -> prints the query seconds (JVM start excluded)
  python pipeline.py check  OUT...             -> prints one stats line per output
"""
import sys
import time

EVENT_COLUMNS = [
    ("event_id", "BIGINT"), ("account_id", "VARCHAR"), ("event_type", "VARCHAR"),
    ("event_ts", "TIMESTAMP"), ("email", "VARCHAR"), ("phone", "VARCHAR"), ("platform", "VARCHAR"),
]

# The same SQL as the sluice model; only the hash function's name differs per engine.
SQL = """
WITH ranked AS (
    SELECT e.*, row_number() OVER (PARTITION BY event_id ORDER BY event_ts) AS rn
    FROM launch_events e
),
linked AS (
    SELECT r.event_id, r.event_type, r.event_ts, r.email, r.phone, r.platform,
           COALESCE(m.account_id, r.account_id) AS account_id
    FROM ranked r
    LEFT JOIN account_migrations m ON m.legacy_account_id = r.account_id
    WHERE r.rn = 1
)
SELECT
    l.event_id,
    {sha}(l.account_id) AS shared_key,
    {sha}(lower(trim(l.email))) AS email_sha256,
    {sha}(regexp_replace(l.phone, '[^0-9]', ''{g})) AS phone_sha256,
    l.event_type,
    l.event_ts,
    l.platform,
    a.country
FROM linked l
JOIN accounts a ON a.account_id = l.account_id
WHERE NOT EXISTS (
    SELECT 1 FROM deletion_requests d WHERE d.email = lower(trim(l.email))
)
"""


def duckdb_run(data, out, threads):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    columns = ", ".join(f"'{n}': '{t}'" for n, t in EVENT_COLUMNS)
    start = time.time()
    con.execute(f"""CREATE VIEW launch_events AS SELECT * FROM read_csv('{data}/launch_events/*/*.csv',
                    header = true, hive_partitioning = true, columns = {{{columns}}})""")
    for name in ["accounts", "account_migrations", "deletion_requests"]:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{data}/{name}.csv', header = true, all_varchar = true)")
    sql = SQL.format(sha="sha256", g=", 'g'")
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
    sql = (SQL.replace("{sha}(l.account_id)", "sha2(l.account_id, 256)")
              .replace("{sha}(lower(trim(l.email)))", "sha2(lower(trim(l.email)), 256)")
              .replace("{sha}(regexp_replace(l.phone, '[^0-9]', ''{g}))", "sha2(regexp_replace(l.phone, '[^0-9]', ''), 256)"))
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
