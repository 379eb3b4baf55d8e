//! The event files of `sluice gen launch`: one day's events in id order, or every day's in
//! a random permutation, as CSV or Parquet batches.

use super::*;

pub(super) const BATCH_ROWS: usize = 65_536;

/// A Parquet file written batch by batch (zstd, as the delivery outputs are).
pub(super) struct ParquetOut {
    path: PathBuf,
    schema: SchemaRef,
    writer: ArrowWriter<BufWriter<File>>,
}

impl ParquetOut {
    pub(super) fn create(path: &Path, schema: SchemaRef) -> Result<ParquetOut> {
        let file = create(path)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| SluiceError::sql(format!("{}: {e}", path.display())))?;
        Ok(ParquetOut {
            path: path.to_path_buf(),
            schema,
            writer,
        })
    }

    pub(super) fn write(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| SluiceError::sql(format!("{}: {e}", self.path.display())))?;
        self.writer
            .write(&batch)
            .map_err(|e| SluiceError::sql(format!("{}: {e}", self.path.display())))
    }

    pub(super) fn close(self) -> Result<u64> {
        self.writer
            .close()
            .map_err(|e| SluiceError::sql(format!("{}: {e}", self.path.display())))?;
        Ok(std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0))
    }
}

/// One day's events; (rows, bytes).
/// The date of day `day` (0 = 2026-05-01).
pub(super) fn day_date(day: u32) -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(2026, 5, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(day as u64)))
        .ok_or_else(|| SluiceError::Usage(format!("day {day} is out of range")))
}

/// A seeded bijection of `0..n`: multiply-xorshift rounds over the next power of two,
/// repeated until the value lands below `n` (each round is a bijection of that range, so
/// the walk ends and no two inputs meet).
pub(super) fn permute(x: u64, n: u64, seed: u64) -> u64 {
    let bits = 64 - (n.max(2) - 1).leading_zeros();
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let shift = (bits / 2).max(1);
    let (k1, k2) = (mix(seed) | 1, mix(seed ^ 0x5bd1_e995) | 1);
    let mut y = x;
    loop {
        y = y.wrapping_mul(k1) & mask;
        y ^= y >> shift;
        y = y.wrapping_mul(k2) & mask;
        y ^= y >> shift;
        if y < n {
            return y;
        }
    }
}

/// Write one day's events into `sink`; the rows written.
pub(super) fn write_day(
    options: &GenOptions,
    accounts: u64,
    day: u32,
    sink: &mut EventSink,
) -> Result<u64> {
    let per_day = options.rows / options.days as u64;
    let rows = per_day + u64::from((day as u64) < options.rows % options.days as u64);
    let first_id = day as u64 * per_day + (day as u64).min(options.rows % options.days as u64);
    let date = day_date(day)?;
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0);
    let date = date.format("%Y-%m-%d").to_string();
    let mut rng = Stream(mix(options.seed) ^ mix(u64::from(day) + 1));
    let mut event = Event::default();
    let mut written = 0u64;
    let mut next_id = first_id;
    while written < rows {
        next_id += 1;
        let id = match options.order {
            GenOrder::Sequential => next_id,
            GenOrder::Random => 1 + permute(next_id - 1, options.rows, options.seed),
        };
        event.fill(&mut rng, options, accounts, id, &date, midnight);
        sink.push(&event)?;
        written += 1;
        if written < rows && rng.below(DUPLICATE_ONE_IN) == 0 {
            sink.push(&event)?;
            written += 1;
        }
    }
    Ok(written)
}

/// One event's fields, as text (the CSV bytes; Parquet parses the two numbers back).
#[derive(Default)]
struct Event {
    id: u64,
    account: Vec<u8>,
    kind: &'static str,
    /// Microseconds since the epoch, and the same as `YYYY-MM-DD hh:mm:ss`.
    ts_micros: i64,
    ts: Vec<u8>,
    email: Vec<u8>,
    phone: Vec<u8>,
    platform: &'static str,
}

impl Event {
    /// A random event of day `date`, whose midnight is `midnight` (seconds since the epoch).
    fn fill(
        &mut self,
        rng: &mut Stream,
        options: &GenOptions,
        accounts: u64,
        id: u64,
        date: &str,
        midnight: i64,
    ) {
        // Skew draws from the stream only when asked for, so the default data stays as it was.
        let hot = options.hot_percent > 0 && rng.chance(options.hot_percent);
        let n = if hot {
            1 + rng.below(super::HOT_ACCOUNTS.min(accounts))
        } else {
            1 + rng.below(accounts)
        };
        let a = Account::new(options.seed, n);
        self.id = id;
        self.account.clear();
        // Half the events of a migrated account still carry the legacy id.
        if a.migrated && rng.chance(50) {
            a.legacy_id(&mut self.account);
        } else {
            a.id(&mut self.account);
        }
        // Each step about 40% as likely as the one before.
        let step = (0..3).take_while(|_| rng.chance(40)).count();
        self.kind = STEPS[step];
        let second = rng.below(86_400) as u32;
        self.ts.clear();
        self.ts.extend_from_slice(date.as_bytes());
        self.ts.push(b' ');
        push_padded(&mut self.ts, (second / 3600).into(), 2);
        self.ts.push(b':');
        push_padded(&mut self.ts, (second / 60 % 60).into(), 2);
        self.ts.push(b':');
        push_padded(&mut self.ts, (second % 60).into(), 2);
        self.ts_micros = (midnight + i64::from(second)) * 1_000_000;
        self.email.clear();
        a.email(&mut self.email);
        self.phone.clear();
        a.phone(&mut self.phone);
        self.platform = PLATFORMS[rng.below(3) as usize];
    }
}

/// Where a day's events go: one CSV or Parquet file in the day's folder.
pub(super) enum EventSink {
    Csv {
        path: PathBuf,
        out: BufWriter<File>,
        line: Vec<u8>,
    },
    Parquet {
        out: Box<ParquetOut>,
        columns: Box<EventColumns>,
    },
}

#[derive(Default)]
pub(super) struct EventColumns {
    id: Int64Builder,
    account: StringBuilder,
    kind: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    email: StringBuilder,
    phone: StringBuilder,
    platform: StringBuilder,
}

impl EventColumns {
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.account.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.phone.finish()),
            Arc::new(self.platform.finish()),
        ]
    }
}

pub(super) fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new(
            "event_ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("email", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new("platform", DataType::Utf8, false),
    ]))
}

impl EventSink {
    pub(super) fn create(folder: &Path, format: GenFormat) -> Result<EventSink> {
        match format {
            GenFormat::Csv => {
                let path = folder.join("events.csv");
                let mut out = create(&path)?;
                out.write_all(b"event_id,account_id,event_type,event_ts,email,phone,platform\n")
                    .map_err(|e| SluiceError::io(&path, e))?;
                Ok(EventSink::Csv {
                    path,
                    out,
                    line: Vec::with_capacity(256),
                })
            }
            GenFormat::Parquet => {
                std::fs::create_dir_all(folder).map_err(|e| SluiceError::io(folder, e))?;
                Ok(EventSink::Parquet {
                    out: Box::new(ParquetOut::create(
                        &folder.join("events.parquet"),
                        event_schema(),
                    )?),
                    columns: Box::default(),
                })
            }
        }
    }

    fn push(&mut self, e: &Event) -> Result<()> {
        match self {
            EventSink::Csv { path, out, line } => {
                line.clear();
                push_int(line, e.id);
                line.push(b',');
                line.extend_from_slice(&e.account);
                line.push(b',');
                line.extend_from_slice(e.kind.as_bytes());
                line.push(b',');
                line.extend_from_slice(&e.ts);
                line.push(b',');
                line.extend_from_slice(&e.email);
                line.push(b',');
                line.extend_from_slice(&e.phone);
                line.push(b',');
                line.extend_from_slice(e.platform.as_bytes());
                line.push(b'\n');
                out.write_all(line)
                    .map_err(|err| SluiceError::io(&*path, err))
            }
            EventSink::Parquet { out, columns } => {
                // Every generated value is ASCII.
                fn text(b: &[u8]) -> &str {
                    std::str::from_utf8(b).unwrap_or_default()
                }
                columns.id.append_value(e.id as i64);
                columns.account.append_value(text(&e.account));
                columns.kind.append_value(e.kind);
                columns.ts.append_value(e.ts_micros);
                columns.email.append_value(text(&e.email));
                if e.phone.is_empty() {
                    columns.phone.append_null();
                } else {
                    columns.phone.append_value(text(&e.phone));
                }
                columns.platform.append_value(e.platform);
                if columns.id.len() == BATCH_ROWS {
                    out.write(columns.finish())?;
                }
                Ok(())
            }
        }
    }

    /// Flush and close; the file's size.
    pub(super) fn close(self) -> Result<u64> {
        match self {
            EventSink::Csv { path, out, .. } => {
                let f = out
                    .into_inner()
                    .map_err(|e| SluiceError::io(&path, e.into_error()))?;
                Ok(f.metadata().map(|m| m.len()).unwrap_or(0))
            }
            EventSink::Parquet {
                mut out,
                mut columns,
            } => {
                if columns.id.len() > 0 {
                    out.write(columns.finish())?;
                }
                out.close()
            }
        }
    }
}
