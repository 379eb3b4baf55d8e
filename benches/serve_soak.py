"""64 clients x 60 s of mixed queries against one Postgres-protocol server: point lookups,
aggregates over the example project, and now and then a streaming 1M-row read. Prints
statements per second, p50/p99 latency per kind, and every error.

    python benches/serve_soak.py "host=127.0.0.1 port=5433 user=sluice dbname=sluice" [clients] [seconds]
"""

import asyncio
import random
import sys
import time

import psycopg

KINDS = [
    # (kind, weight, SQL, parameters)
    ("point lookup", 90, "SELECT name, country FROM people WHERE id = %s", lambda: (random.randint(1, 1000),)),
    (
        "aggregate",
        9,
        "SELECT day, event_type, count(*) AS events, count(DISTINCT account_id) AS accounts "
        "FROM launch_events GROUP BY day, event_type ORDER BY day, event_type",
        lambda: None,
    ),
    ("stream 1M rows", 1, "SELECT value, value * 2 AS twice FROM generate_series(1, 1000000)", lambda: None),
]
EXPECTED_ROWS = {"stream 1M rows": 1_000_000}


async def client(dsn, until, latencies, errors):
    weights = [k[1] for k in KINDS]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < until:
            kind, _, sql, params = random.choices(KINDS, weights)[0]
            started = time.monotonic()
            try:
                async with conn.cursor() as cur:
                    await cur.execute(sql, params())
                    rows = 0
                    while True:
                        batch = await cur.fetchmany(10_000)
                        if not batch:
                            break
                        rows += len(batch)
                if kind in EXPECTED_ROWS and rows != EXPECTED_ROWS[kind]:
                    raise RuntimeError(f"{kind}: {rows} rows, expected {EXPECTED_ROWS[kind]}")
                latencies.setdefault(kind, []).append(time.monotonic() - started)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                errors.append(f"{kind}: {type(e).__name__}: {e}")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def main():
    dsn = sys.argv[1]
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    latencies, errors = {}, []
    started = time.monotonic()
    until = started + seconds
    results = await asyncio.gather(
        *(client(dsn, until, latencies, errors) for _ in range(clients)), return_exceptions=True
    )
    elapsed = time.monotonic() - started
    errors += [f"connection: {type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]
    total = sum(len(v) for v in latencies.values())
    print(f"soak: {clients} clients x {seconds:.0f} s, psycopg {psycopg.__version__}")
    print(f"{'':16} {'statements':>10} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, _, _, _ in KINDS:
        v = latencies.get(kind, [])
        if v:
            print(
                f"{kind:16} {len(v):10d} {len(v) / elapsed:8.0f} "
                f"{percentile(v, 50) * 1000:8.1f} {percentile(v, 99) * 1000:8.1f}"
            )
    print(f"{'all':16} {total:10d} {total / elapsed:8.0f}")
    print(f"errors: {len(errors)}")
    for e in errors[:20]:
        print("  " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
