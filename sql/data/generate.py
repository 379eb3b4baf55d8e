"""Regenerates the example project's small embedded data (deterministic).

Scenario: a game launch with a prize draw. Players come from the Korean service and from
an overseas service whose accounts were migrated (legacy overseas id -> new account id).
The raw data is messy the way real exports are: padded and mixed-case emails, phones in
several formats, duplicate event rows, and a few erasure (GDPR/PIPA) requests.
Run: python3 sql/data/generate.py  (writes next to this file; accounts.parquet is then
made from accounts.csv with sluice itself, see README)."""
import csv
import os
import random

rng = random.Random(20260501)
here = os.path.dirname(os.path.abspath(__file__))
first = ["Minji", "Jisoo", "Hyun", "Emma", "Liam", "Yuki", "Haruto", "Olivia", "Noah", "Sora", "Daniel", "Ava"]
domains = ["gmail.com", "naver.com", "kakao.com", "yahoo.co.jp", "outlook.com", "googlemail.com"]
countries = ["KR", "KR", "KR", "US", "JP", "US", "JP"]

accounts = []
for i in range(1, 121):
    name = rng.choice(first)
    country = rng.choice(countries)
    email = f"{name.lower()}.{i}@{rng.choice(domains)}"
    style = rng.randrange(4)
    if style == 0:
        email = "  " + email.upper() + " "
    elif style == 1:
        email = email.capitalize()
    digits = f"{rng.randrange(1000, 9999)}{rng.randrange(1000, 9999)}"
    if country == "KR":
        phone = rng.choice([f"010-{digits[:4]}-{digits[4:]}", f"+82 10 {digits[:4]} {digits[4:]}", f"010{digits}"])
    elif country == "US":
        phone = rng.choice([f"(415) 555-{digits[:4]}", f"+1 415 555 {digits[:4]}", f"415.555.{digits[:4]}"])
    else:
        phone = rng.choice([f"090-{digits[:4]}-{digits[4:]}", f"+81 90 {digits[:4]} {digits[4:]}"])
    if rng.random() < 0.05:
        phone = ""
    # A quarter are migrated overseas accounts: they keep a legacy id from the old service.
    legacy = f"OS-{rng.randrange(100000, 999999)}" if country != "KR" and rng.random() < 0.6 else ""
    created = f"2026-0{rng.randrange(1, 5)}-{rng.randrange(10, 28)} {rng.randrange(0, 24):02d}:{rng.randrange(0, 60):02d}:00"
    accounts.append([f"A{i:04d}", legacy, name, email, phone, country, created])

with open(os.path.join(here, "accounts.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["account_id", "legacy_account_id", "first_name", "email", "phone", "country", "created_at"])
    w.writerows(accounts)

# Legacy overseas events reference the old ids: the identity link maps them to the new account.
migrations = [(a[1], a[0]) for a in accounts if a[1]]
with open(os.path.join(here, "account_migrations.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["legacy_account_id", "account_id", "migrated_at"])
    for legacy, new in migrations:
        w.writerow([legacy, new, "2026-04-01"])

event_id = 0
for day in ["2026-05-01", "2026-05-02"]:
    rows = []
    for _ in range(150):
        a = rng.choice(accounts)
        account = a[1] if a[1] and rng.random() < 0.5 else a[0]  # some events still carry the legacy id
        event_id += 1
        steps = ["session_start", "draw_entry", "click", "purchase"]
        kind = steps[min(int(rng.expovariate(0.9)), 3)]
        ts = f"{day} {rng.randrange(0, 24):02d}:{rng.randrange(0, 60):02d}:{rng.randrange(0, 60):02d}"
        platform = rng.choice(["ios", "android", "pc"])
        rows.append([event_id, account, kind, ts, a[3], a[4], platform])
        if rng.random() < 0.08:  # the exporter retried: the same event twice
            rows.append([event_id, account, kind, ts, a[3], a[4], platform])
    folder = os.path.join(here, "launch_events", f"day={day}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "events.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "account_id", "event_type", "event_ts", "email", "phone", "platform"])
        w.writerows(rows)

with open(os.path.join(here, "deletion_requests.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["email", "requested_at"])
    for a in rng.sample(accounts, 4):
        w.writerow([a[3].strip().lower(), "2026-04-28"])

with open(os.path.join(here, "countries.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["code", "name"])
    w.writerows([["KR", "Korea"], ["US", "United States"], ["JP", "Japan"]])
