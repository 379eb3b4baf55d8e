"""Fetch a large result through psycopg (the Postgres port) and through ADBC Flight SQL,
then run point lookups from several ADBC clients; prints seconds, rows/s and the ratios.

    python benches/flight.py PG_PORT FLIGHT_PORT TABLE ROWS_EXPECTED CLIENTS SECONDS MAX_ID
"""
import os
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg


def psycopg_fetch(port, table):
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(host="127.0.0.1", port=port, user="bench", dbname="sluice") as conn:
        # Streamed (psycopg's chunked single-row mode), as a client reading 10M rows must.
        with conn.cursor() as cur:
            for _ in cur.stream(f"SELECT * FROM {table}", size=10_000):
                rows += 1
    return rows, time.perf_counter() - started


def adbc_fetch(port, table):
    started = time.perf_counter()
    with flight_sql.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {table}")
        rows = 0
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
    return rows, time.perf_counter() - started


def adbc_lookups(port, table, clients, seconds, max_id):
    counts = [0] * clients
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i):
        with flight_sql.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn:
            cur = conn.cursor()
            n = 0
            while time.perf_counter() < stop:
                key = 1 + (n * 7919 + i * 104729) % max_id
                try:
                    cur.execute(f"SELECT name, country FROM {table} WHERE id = $1", parameters=(key,))
                    cur.fetchall()
                    counts[i] += 1
                except Exception:
                    errors[i] += 1
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds, sum(errors)


def main():
    pg_port, flight_port, table, expected, clients, seconds, max_id, lookup_table = sys.argv[1:9]
    expected, clients, seconds, max_id = int(expected), int(clients), float(seconds), int(max_id)
    pg_rows, pg_s = psycopg_fetch(int(pg_port), table)
    fl_rows, fl_s = adbc_fetch(int(flight_port), table)
    assert pg_rows == fl_rows == expected, (pg_rows, fl_rows, expected)
    print(f"fetch {expected} rows of {table}: psycopg {pg_s:.2f} s ({pg_rows / pg_s / 1e6:.2f} M rows/s), "
          f"ADBC Flight SQL {fl_s:.2f} s ({fl_rows / fl_s / 1e6:.2f} M rows/s), ratio {pg_s / fl_s:.1f}x")
    tps, errors = adbc_lookups(int(flight_port), lookup_table, clients, seconds, max_id)
    print(f"ADBC point lookups, {clients} clients, {seconds:.0f} s: {tps:.0f} per s, {errors} errors")
    sys.stdout.flush()
    os._exit(0)


main()
