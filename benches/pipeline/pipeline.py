"""The delivery pipeline of benches/pipeline/project/models/delivery.sql, for DuckDB, Polars,
ClickHouse (chdb) and PySpark on the same generated data, and the cross-check of the outputs.

  python pipeline.py ENGINE DATA OUT THREADS  -> prints the query seconds
      ENGINE: duckdb, polars, chdb or spark. DATA holds what `sluice gen launch` wrote; the
      events are read from $BENCH_EVENTS when set (an s3:// URL on $BENCH_S3_ENDPOINT).
  python pipeline.py check OUT...             -> prints one stats line per output: rows,
      distinct ids, keys, email and phone hashes, sum of ids, countries, and a fingerprint
      of every row's values
  python pipeline.py versions                 -> prints every peer's version

Python leaves with os._exit after flushing: pyarrow and the JVM bridge here sometimes abort
in their exit-time destructors.
"""
import glob
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
    """The sluice model's SQL (its config comment removed): the SQL engines run it."""
    text = open(MODEL).read()
    return text[text.index("*/") + 2:].strip()


class Events:
    """Where the events of a shape are: one CSV or Parquet file, day folders, or S3."""

    def __init__(self, data):
        self.s3 = os.environ.get("BENCH_EVENTS")
        self.endpoint = os.environ.get("BENCH_S3_ENDPOINT")
        base = f"{data}/launch_events"
        if self.s3:
            self.format, self.one_file = "parquet", False
            self.files = self.s3.rstrip("/") + "/*/*.parquet"
        else:
            for ext in ("csv", "parquet"):
                if os.path.exists(f"{base}/events.{ext}"):
                    self.format, self.one_file, self.files = ext, True, f"{base}/events.{ext}"
                    break
            else:
                self.one_file = False
                self.format = "parquet" if glob.glob(f"{base}/*/*.parquet") else "csv"
                self.files = f"{base}/*/*.{self.format}"


def duckdb_run(data, out, threads):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    limit = os.environ.get("BENCH_MEMORY_LIMIT")
    if limit:
        con.execute(f"SET memory_limit = '{limit.rstrip('B')}B'")
    ev = Events(data)
    if ev.s3:
        raise SystemExit("duckdb: httpfs (S3) is not installable here (no DuckDB 2.0 wheel of it on PyPI)")
    columns = ", ".join(f"'{n}': '{t}'" for n, t in EVENT_COLUMNS)
    start = time.time()
    hive = str(not ev.one_file).lower()
    if ev.format == "csv":
        con.execute(f"""CREATE VIEW launch_events AS SELECT * FROM read_csv('{ev.files}',
                        header = true, hive_partitioning = {hive}, columns = {{{columns}}})""")
    else:
        con.execute(f"CREATE VIEW launch_events AS SELECT * FROM read_parquet('{ev.files}', hive_partitioning = {hive})")
    for name in ["accounts", "account_migrations", "deletion_requests"]:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{data}/{name}.csv', header = true, all_varchar = true)")
    # DuckDB's sha256 returns lowercase hex, as sha256_hex does.
    sql = model_sql().replace("sha256_hex(", "sha256(")
    assert "sha256_hex" not in sql
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, PARTITION_BY (country), OVERWRITE_OR_IGNORE)")
    return time.time() - start


def polars_run(data, out, threads):
    # Polars reads its thread count when it is imported.
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    import polars as pl
    import polars_hash as plh
    ev = Events(data)
    start = time.time()
    schema = {"event_id": pl.Int64, "account_id": pl.String, "event_type": pl.String,
              "event_ts": pl.Datetime("us"), "email": pl.String, "phone": pl.String,
              "platform": pl.String}
    storage = None
    if ev.s3:
        storage = {"aws_endpoint_url": ev.endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
                   "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
                   "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
    if ev.format == "csv":
        events = pl.scan_csv(ev.files, schema=schema)
    else:
        events = pl.scan_parquet(ev.files, storage_options=storage, hive_partitioning=False)
    events = events.select(list(schema))

    def dim(name):
        return pl.scan_csv(f"{data}/{name}.csv", infer_schema=False)

    # row_number() OVER (PARTITION BY event_id ORDER BY event_ts) = 1: per id, the row of
    # the smallest event_ts (Polars' way without sorting the whole input).
    first = events.group_by("event_id").agg(pl.all().get(pl.col("event_ts").arg_min()))
    migrations = dim("account_migrations").select(
        pl.col("legacy_account_id"), pl.col("account_id").alias("new_account_id"))
    linked = (first.join(migrations, left_on="account_id", right_on="legacy_account_id", how="left")
              .with_columns(pl.coalesce("new_account_id", "account_id").alias("account_id"))
              .drop("new_account_id"))
    accounts = dim("accounts").select("account_id", "country")
    erased = dim("deletion_requests").select(pl.col("email").alias("erased_email"))
    clean_email = pl.col("email").str.strip_chars().str.to_lowercase()
    result = (linked.join(accounts, on="account_id", how="inner")
              .with_columns(clean_email.alias("clean_email"))
              .join(erased, left_on="clean_email", right_on="erased_email", how="anti")
              .select(
                  pl.col("event_id"),
                  plh.col("account_id").chash.sha2_256().alias("shared_key"),
                  plh.col("clean_email").chash.sha2_256().alias("email_sha256"),
                  plh.col("phone").str.replace_all("[^0-9]", "").chash.sha2_256().alias("phone_sha256"),
                  pl.col("event_type"), pl.col("event_ts"), pl.col("platform"), pl.col("country")))
    result.sink_parquet(pl.PartitionBy(out, key="country", include_key=False), mkdir=True,
                        compression="snappy", engine="streaming")
    return time.time() - start


def chdb_run(data, out, threads):
    import chdb.session
    ev = Events(data)
    s = chdb.session.Session()
    start = time.time()
    settings = f"SETTINGS max_threads = {threads}, join_use_nulls = 1"
    columns = ("event_id Int64, account_id String, event_type String, event_ts DateTime64(6), "
               "email Nullable(String), phone Nullable(String), platform String")
    if ev.s3:
        url = ev.endpoint.rstrip("/") + "/" + ev.s3[len("s3://"):].rstrip("/") + "/*/*.parquet"
        events = (f"s3('{url}', '{os.environ['AWS_ACCESS_KEY_ID']}', "
                  f"'{os.environ['AWS_SECRET_ACCESS_KEY']}', 'Parquet')")
    elif ev.format == "csv":
        events = f"file('{ev.files}', 'CSVWithNames', '{columns}')"
    else:
        events = f"file('{ev.files}', 'Parquet')"
    s.query(f"CREATE VIEW launch_events AS SELECT event_id, account_id, event_type, event_ts, email, phone, platform FROM {events}")
    for name in ["accounts", "account_migrations", "deletion_requests"]:
        s.query(f"CREATE VIEW {name} AS SELECT * FROM file('{data}/{name}.csv', 'CSVWithNames') "
                "SETTINGS schema_inference_make_columns_nullable = 1, input_format_csv_use_best_effort_in_schema_inference = 0")
    # ClickHouse's way of `row_number() = 1` is LIMIT 1 BY; NOT EXISTS is a LEFT ANTI JOIN.
    sql = f"""
    INSERT INTO FUNCTION file('{out}/country={{_partition_id}}/data.parquet', 'Parquet')
    PARTITION BY country
    WITH first AS (
        SELECT * FROM launch_events ORDER BY event_id, event_ts LIMIT 1 BY event_id
    ),
    linked AS (
        SELECT r.event_id, r.event_type, r.event_ts, r.email, r.phone, r.platform,
               COALESCE(m.account_id, r.account_id) AS account_id
        FROM first r LEFT JOIN account_migrations m ON m.legacy_account_id = r.account_id
    )
    SELECT l.event_id,
           lower(hex(SHA256(l.account_id))) AS shared_key,
           lower(hex(SHA256(lower(trim(l.email))))) AS email_sha256,
           if(l.phone IS NULL, NULL, lower(hex(SHA256(replaceRegexpAll(l.phone, '[^0-9]', ''))))) AS phone_sha256,
           l.event_type, l.event_ts, l.platform, a.country AS country
    FROM linked l
    JOIN accounts a ON a.account_id = l.account_id
    LEFT ANTI JOIN deletion_requests d ON d.email = lower(trim(l.email))
    {settings}"""
    s.query(sql)
    return time.time() - start


def spark_run(data, out, threads):
    from pyspark.sql import SparkSession
    ev = Events(data)
    if ev.s3:
        raise SystemExit("spark: s3a needs hadoop-aws jars, which are not installable here")
    spark = (SparkSession.builder.master(f"local[{threads}]")
             .config("spark.driver.memory", "8g")
             .config("spark.sql.shuffle.partitions", str(threads * 4))
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    schema = ", ".join(f"{n} {t.replace('VARCHAR', 'STRING')}" for n, t in EVENT_COLUMNS)
    start = time.time()
    path = ev.files if ev.one_file else f"{data}/launch_events"
    if ev.format == "csv":
        spark.read.csv(path, header=True, schema=schema).createOrReplaceTempView("launch_events")
    else:
        spark.read.parquet(path).createOrReplaceTempView("launch_events")
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
        # Every engine writes country=XX/ folders; ClickHouse also keeps the column in the files.
        row = con.execute(f"""SELECT count(*), count(DISTINCT event_id), count(DISTINCT shared_key),
                                     count(DISTINCT email_sha256), count(DISTINCT phone_sha256), sum(event_id),
                                     count(DISTINCT country),
                                     bit_xor(hash(event_id, shared_key, email_sha256, coalesce(phone_sha256, ''),
                                                  event_type, platform, country, epoch(event_ts::TIMESTAMP)))
                              FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true, union_by_name = true)""").fetchone()
        print(" ".join(str(v) for v in row))


def versions():
    from importlib.metadata import version
    print(" ".join(f"{p}={version(p)}" for p in ["duckdb", "polars", "polars-hash", "chdb", "pyspark"]))


def main():
    what = sys.argv[1]
    engines = {"duckdb": duckdb_run, "polars": polars_run, "chdb": chdb_run, "spark": spark_run}
    if what in engines:
        print(f"{engines[what](sys.argv[2], sys.argv[3], int(sys.argv[4])):.2f}")
    elif what == "check":
        check(sys.argv[2:])
    elif what == "versions":
        versions()
    else:
        raise SystemExit(f"unknown command {what}")


if __name__ == "__main__":
    code = 0
    try:
        main()
    except SystemExit as e:
        if e.code not in (None, 0):
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
