//! `sluice gen launch`: deterministic synthetic launch data with the example project's
//! schema, at any size, for benchmarks and load tests.
//!
//! Nothing is held in memory but one buffer per writer: every account's attributes are a
//! pure function of (seed, account number), so events pick an account number and derive
//! its email, phone and ids on the spot, and each day's events come from their own seeded
//! stream, so days are written in parallel and the output does not depend on the threads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{Result, SluiceError};

mod events;

use events::{day_date, write_day, EventSink, ParquetOut, BATCH_ROWS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    Csv,
    Parquet,
}

/// The order event ids arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenOrder {
    /// Ascending within each day (what an exporter that walks its table writes).
    Sequential,
    /// A seeded permutation of all ids: any event may come anywhere in the data.
    Random,
}

/// How the event files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenLayout {
    /// One `day=YYYY-MM-DD` folder per day, one file each.
    DayFolders,
    /// One large file, `launch_events/events.csv` (or `.parquet`), every day in it.
    OneFile,
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Event rows in total, exporter duplicates included.
    pub rows: u64,
    pub out: PathBuf,
    pub seed: u64,
    pub format: GenFormat,
    /// Days of events, one `day=YYYY-MM-DD` folder each, from 2026-05-01.
    pub days: u32,
    pub threads: usize,
    pub order: GenOrder,
    pub layout: GenLayout,
    /// Percent of the events that go to the [`HOT_ACCOUNTS`] first accounts (skewed keys).
    pub hot_percent: u64,
}

/// How many accounts share the events `--hot-percent` skews onto.
pub const HOT_ACCOUNTS: u64 = 5;

#[derive(Debug, Default)]
pub struct GenSummary {
    pub events: u64,
    pub accounts: u64,
    pub migrations: u64,
    pub deletion_requests: u64,
    pub bytes: u64,
}

impl GenSummary {
    /// The line `sluice gen launch` ends with.
    pub fn summary(&self, days: u32, took: std::time::Duration, out: &Path) -> String {
        let secs = took.as_secs_f64();
        format!(
            "wrote {} events over {days} days, {} accounts ({} migrated), {} deletion requests: {:.1} MB in {secs:.2}s ({:.2} M events/s) to {}",
            self.events,
            self.accounts,
            self.migrations,
            self.deletion_requests,
            self.bytes as f64 / 1e6,
            self.events as f64 / secs / 1e6,
            out.display()
        )
    }
}

const FIRST: [&str; 12] = [
    "minji", "jisoo", "hyun", "emma", "liam", "yuki", "haruto", "olivia", "noah", "sora", "daniel",
    "ava",
];
const DOMAINS: [&str; 6] = [
    "gmail.com",
    "naver.com",
    "kakao.com",
    "yahoo.co.jp",
    "outlook.com",
    "googlemail.com",
];
const STEPS: [&str; 4] = ["session_start", "draw_entry", "click", "purchase"];
const PLATFORMS: [&str; 3] = ["ios", "android", "pc"];
/// One event in this many is written twice, as the real exporter's retries do.
const DUPLICATE_ONE_IN: u64 = 12;
/// One account in this many asked to be erased.
const ERASED_ONE_IN: u64 = 200;

/// splitmix64: a well-mixed 64-bit hash of a counter, so account attributes need no state.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A day's random stream: splitmix64 over a counter. Its output is fixed by the seed for
/// every version of sluice, which is what reproducible benchmark data needs.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Uniform in `0..n` (n is far below 2^32, so the bias of the multiply is negligible).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Country {
    Kr,
    Us,
    Jp,
}

impl Country {
    fn code(self) -> &'static str {
        match self {
            Country::Kr => "KR",
            Country::Us => "US",
            Country::Jp => "JP",
        }
    }
}

/// Everything about account number `n` (1-based), derived from the seed.
struct Account {
    n: u64,
    name: &'static str,
    domain: &'static str,
    /// 0: padded upper case, 1: capitalised, else as is.
    email_style: u64,
    country: Country,
    phone_style: u64,
    digits: u64,
    has_phone: bool,
    migrated: bool,
    erased: bool,
    created_day: u64,
    created_minute: u64,
}

impl Account {
    fn new(seed: u64, n: u64) -> Account {
        let a = mix(seed ^ n.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let b = mix(a);
        let country = match a % 7 {
            0..=2 => Country::Kr,
            3 | 5 => Country::Us,
            _ => Country::Jp,
        };
        Account {
            n,
            name: FIRST[((a >> 8) % 12) as usize],
            domain: DOMAINS[((a >> 16) % 6) as usize],
            email_style: (a >> 24) % 4,
            country,
            phone_style: (a >> 28) % 3,
            digits: 10_000_000 + (b % 90_000_000),
            has_phone: (b >> 32) % 20 != 0,
            migrated: country != Country::Kr && (b >> 40) % 10 < 6,
            erased: (b >> 44) % ERASED_ONE_IN == 0,
            created_day: 10 + (b >> 54) % 18,
            created_minute: (a >> 40) % 1440,
        }
    }

    fn id(&self, out: &mut Vec<u8>) {
        out.push(b'A');
        push_padded(out, self.n, 7);
    }

    /// Legacy overseas ids are unique: a bijection of the account number below 10^9.
    fn legacy_id(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"OS-");
        push_padded(out, (self.n.wrapping_mul(7919)) % 1_000_000_000, 9);
    }

    fn email(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if self.email_style == 0 {
            out.extend_from_slice(b"  ");
        }
        let local = out.len();
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'.');
        push_int(out, self.n);
        out.push(b'@');
        out.extend_from_slice(self.domain.as_bytes());
        match self.email_style {
            0 => {
                out[local..].make_ascii_uppercase();
                out.push(b' ');
            }
            1 => out[local] = out[local].to_ascii_uppercase(),
            _ => {}
        }
        debug_assert!(out.len() > start);
    }

    /// The email as a deletion request gives it: trimmed, lower case.
    fn clean_email(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'.');
        push_int(out, self.n);
        out.push(b'@');
        out.extend_from_slice(self.domain.as_bytes());
    }

    fn phone(&self, out: &mut Vec<u8>) {
        if !self.has_phone {
            return;
        }
        let (hi, lo) = (self.digits / 10_000, self.digits % 10_000);
        // The prefix, then (for 8-digit numbers) the high four digits and a separator,
        // then the low four digits.
        let (prefix, high): (&[u8], Option<&[u8]>) = match (self.country, self.phone_style) {
            (Country::Kr, 0) => (b"010-", Some(b"-")),
            (Country::Kr, 1) => (b"+82 10 ", Some(b" ")),
            (Country::Kr, _) => (b"010", Some(b"")),
            (Country::Us, 0) => (b"(415) 555-", None),
            (Country::Us, 1) => (b"+1 415 555 ", None),
            (Country::Us, _) => (b"415.555.", None),
            (Country::Jp, 0) | (Country::Jp, 2) => (b"090-", Some(b"-")),
            (Country::Jp, _) => (b"+81 90 ", Some(b" ")),
        };
        out.extend_from_slice(prefix);
        if let Some(separator) = high {
            push_padded(out, hi, 4);
            out.extend_from_slice(separator);
        }
        push_padded(out, lo, 4);
    }
}

fn push_int(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(s.len())));
    out.extend_from_slice(s.as_bytes());
}

/// Write the data set; see the module comment for what it holds.
pub fn launch(options: &GenOptions) -> Result<GenSummary> {
    if options.days == 0 || options.rows == 0 {
        return Err(SluiceError::Usage(
            "--rows and --days must be at least 1".into(),
        ));
    }
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|e| SluiceError::io(out, e))?;
    let accounts = (options.rows / 20).max(100);
    let mut summary = GenSummary {
        accounts,
        ..GenSummary::default()
    };
    let (migrations, erased, bytes) = write_accounts(options, accounts)?;
    summary.migrations = migrations;
    summary.deletion_requests = erased;
    summary.bytes += bytes;
    let countries = out.join("countries.csv");
    std::fs::write(
        &countries,
        "code,name\nKR,Korea\nUS,United States\nJP,Japan\n",
    )
    .map_err(|e| SluiceError::io(&countries, e))?;

    if options.layout == GenLayout::OneFile {
        // One writer: the days one after another into one file.
        let mut sink = EventSink::create(&out.join("launch_events"), options.format)?;
        for day in 0..options.days {
            summary.events += write_day(options, accounts, day, &mut sink)?;
        }
        summary.bytes += sink.close()?;
        return Ok(summary);
    }
    // Days in parallel, each from its own stream; rows spread evenly over the days.
    let days: Vec<u32> = (0..options.days).collect();
    let threads = options.threads.clamp(1, days.len());
    let per_thread: Vec<Vec<u32>> = (0..threads)
        .map(|t| {
            days.iter()
                .copied()
                .filter(|d| *d as usize % threads == t)
                .collect()
        })
        .collect();
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .iter()
            .map(|mine| {
                scope.spawn(move || {
                    let mut total = (0u64, 0u64);
                    for &day in mine {
                        let folder = options
                            .out
                            .join("launch_events")
                            .join(format!("day={}", day_date(day)?.format("%Y-%m-%d")));
                        let mut sink = EventSink::create(&folder, options.format)?;
                        total.0 += write_day(options, accounts, day, &mut sink)?;
                        total.1 += sink.close()?;
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(SluiceError::Usage("a writer thread panicked".into())))
            })
            .collect()
    });
    for r in results {
        let (rows, bytes) = r?;
        summary.events += rows;
        summary.bytes += bytes;
    }
    Ok(summary)
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SluiceError::io(parent, e))?;
    }
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| SluiceError::io(path, e))
}

/// accounts.csv, accounts.parquet, account_migrations.csv and deletion_requests.csv, in
/// one pass over the accounts. Returns (migrations, deletion requests, bytes).
fn write_accounts(options: &GenOptions, accounts: u64) -> Result<(u64, u64, u64)> {
    let out = &options.out;
    let paths = [
        out.join("accounts.csv"),
        out.join("account_migrations.csv"),
        out.join("deletion_requests.csv"),
    ];
    let mut csv = create(&paths[0])?;
    let mut migrations = create(&paths[1])?;
    let mut deletions = create(&paths[2])?;
    let parquet_path = out.join("accounts.parquet");
    let schema = Arc::new(Schema::new(
        [
            "account_id",
            "legacy_account_id",
            "first_name",
            "email",
            "phone",
            "country",
            "created_at",
        ]
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect::<Vec<_>>(),
    ));
    let mut parquet = ParquetOut::create(&parquet_path, schema)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| SluiceError::io(&path, e)
    };
    csv.write_all(b"account_id,legacy_account_id,first_name,email,phone,country,created_at\n")
        .map_err(io(&paths[0]))?;
    migrations
        .write_all(b"legacy_account_id,account_id,migrated_at\n")
        .map_err(io(&paths[1]))?;
    deletions
        .write_all(b"email,requested_at\n")
        .map_err(io(&paths[2]))?;
    let (mut n_migrations, mut n_erased) = (0, 0);
    let mut line = Vec::with_capacity(256);
    let mut fields: [Vec<u8>; 7] = Default::default();
    let mut columns: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::new()).collect();
    for n in 1..=accounts {
        let a = Account::new(options.seed, n);
        fields.iter_mut().for_each(Vec::clear);
        a.id(&mut fields[0]);
        if a.migrated {
            a.legacy_id(&mut fields[1]);
        }
        let name = a.name.as_bytes();
        fields[2].push(name[0].to_ascii_uppercase());
        fields[2].extend_from_slice(&name[1..]);
        a.email(&mut fields[3]);
        a.phone(&mut fields[4]);
        fields[5].extend_from_slice(a.country.code().as_bytes());
        fields[6].extend_from_slice(b"2026-0");
        push_int(&mut fields[6], 1 + a.n % 4);
        fields[6].push(b'-');
        push_int(&mut fields[6], a.created_day);
        fields[6].push(b' ');
        push_padded(&mut fields[6], a.created_minute / 60, 2);
        fields[6].push(b':');
        push_padded(&mut fields[6], a.created_minute % 60, 2);
        fields[6].extend_from_slice(b":00");
        line.clear();
        for (k, f) in fields.iter().enumerate() {
            if k > 0 {
                line.push(b',');
            }
            line.extend_from_slice(f);
            // Every value is ASCII; empty means NULL in the CSV and in Parquet.
            let text = std::str::from_utf8(f).unwrap_or_default();
            if text.is_empty() {
                columns[k].append_null();
            } else {
                columns[k].append_value(text);
            }
        }
        line.push(b'\n');
        csv.write_all(&line).map_err(io(&paths[0]))?;
        if a.migrated {
            line.clear();
            line.extend_from_slice(&fields[1]);
            line.push(b',');
            line.extend_from_slice(&fields[0]);
            line.extend_from_slice(b",2026-04-01\n");
            migrations.write_all(&line).map_err(io(&paths[1]))?;
            n_migrations += 1;
        }
        if a.erased {
            line.clear();
            a.clean_email(&mut line);
            line.extend_from_slice(b",2026-04-28\n");
            deletions.write_all(&line).map_err(io(&paths[2]))?;
            n_erased += 1;
        }
        if columns[0].len() == BATCH_ROWS {
            parquet.write(
                columns
                    .iter_mut()
                    .map(|c| Arc::new(c.finish()) as ArrayRef)
                    .collect(),
            )?;
        }
    }
    if !columns[0].is_empty() {
        parquet.write(
            columns
                .iter_mut()
                .map(|c| Arc::new(c.finish()) as ArrayRef)
                .collect(),
        )?;
    }
    let mut bytes = parquet.close()?;
    for (w, path) in [csv, migrations, deletions].into_iter().zip(&paths) {
        let f = w
            .into_inner()
            .map_err(|e| SluiceError::io(path, e.into_error()))?;
        bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
    }
    Ok((n_migrations, n_erased, bytes))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_a_pure_function_of_seed_and_number() {
        let (a, b) = (Account::new(7, 42), Account::new(7, 42));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.email(&mut x);
        b.email(&mut y);
        assert_eq!(x, y);
        let mut ids = std::collections::HashSet::new();
        for n in 1..=100_000 {
            let mut id = Vec::new();
            Account::new(7, n).legacy_id(&mut id);
            assert!(ids.insert(id), "legacy ids repeat at {n}");
        }
    }

    #[test]
    fn messy_emails_and_phones_look_like_the_exports() {
        let mut seen_padded = false;
        for n in 1..200 {
            let a = Account::new(1, n);
            let mut e = Vec::new();
            a.email(&mut e);
            let e = String::from_utf8(e).unwrap();
            let mut clean = Vec::new();
            a.clean_email(&mut clean);
            assert_eq!(e.trim().to_lowercase(), String::from_utf8(clean).unwrap());
            seen_padded |= e.starts_with("  ") && e.ends_with(' ');
        }
        assert!(seen_padded);
    }
}
