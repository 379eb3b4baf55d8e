//! Rows per second of sluice's hashing and identity functions on 1M rows, next to the raw
//! `sha2` crate on the same bytes. Functions are called per 8192-row batch, as in a query.
//! Run with `cargo bench --bench functions`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};
use sha2::{Digest, Sha256};
use sluice::config::Project;
use sluice::session::{build_session, Session, SessionOptions};

const ROWS: usize = 1_000_000;

fn session() -> Session {
    let dir = std::env::temp_dir();
    let project = Project::load(&dir).expect("empty project");
    build_session(Arc::new(project), &SessionOptions::new()).expect("session")
}

fn emails() -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        (0..ROWS).map(|i| format!(" User.{i}@Example.com ")),
    ))
}

fn phones() -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        (0..ROWS).map(|i| format!("+1 (650) 555-{:04}", i % 10_000)),
    ))
}

fn text(s: &str) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.to_string())))
}

/// DataFusion's default batch size: scalar functions are called once per batch.
const BATCH: usize = 8192;

/// Call a registered scalar function over `ROWS` rows in batches of `BATCH`, as DataFusion's
/// executor does; array arguments are sliced (no copy), scalars passed as they are.
fn invoke(session: &Session, name: &str, args: Vec<ColumnarValue>) -> usize {
    let udf = session.ctx.udf(name).expect("registered");
    let arg_fields: Vec<_> = args
        .iter()
        .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
        .collect();
    let config_options = Arc::new(ConfigOptions::default());
    let return_field = Arc::new(Field::new("r", DataType::Utf8, true));
    let mut produced = 0;
    for offset in (0..ROWS).step_by(BATCH) {
        let rows = BATCH.min(ROWS - offset);
        let batch_args = args
            .iter()
            .map(|a| match a {
                ColumnarValue::Array(array) => ColumnarValue::Array(array.slice(offset, rows)),
                scalar => scalar.clone(),
            })
            .collect();
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args: batch_args,
                arg_fields: arg_fields.clone(),
                number_rows: rows,
                return_field: return_field.clone(),
                config_options: config_options.clone(),
            })
            .expect("invoke");
        produced += out.into_array(rows).expect("array").len();
    }
    produced
}

fn hashing(c: &mut Criterion) {
    let session = session();
    let emails = emails();
    let phones = phones();
    let values = emails
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("strings")
        .clone();
    let mut group = c.benchmark_group("hashing_1M_short_strings");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("raw_sha2_crate", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for v in values.iter().flatten() {
                acc ^= Sha256::digest(v.as_bytes())[0];
            }
            acc
        })
    });
    group.bench_function("sha256_hex", |b| {
        b.iter(|| {
            invoke(
                &session,
                "sha256_hex",
                vec![ColumnarValue::Array(emails.clone())],
            )
        })
    });
    for (kind, input) in [("email", &emails), ("phone", &phones)] {
        for profile in ["meta", "google"] {
            group.bench_function(BenchmarkId::new(format!("hash_pii_{kind}"), profile), |b| {
                b.iter(|| {
                    invoke(
                        &session,
                        "hash_pii",
                        vec![
                            ColumnarValue::Array(input.clone()),
                            text(kind),
                            text(profile),
                        ],
                    )
                })
            });
        }
    }
    group.bench_function("shared_id", |b| {
        b.iter(|| {
            invoke(
                &session,
                "shared_id",
                vec![text("sluice.user"), ColumnarValue::Array(emails.clone())],
            )
        })
    });
    group.finish();
}

/// 1M edges: chains of legacy -> migrated -> merged accounts, so groups of 1 to 3 ids.
fn identity(c: &mut Criterion) {
    let session = session();
    let left = StringArray::from_iter_values((0..ROWS).map(|i| format!("L{i:08}")));
    let right = StringArray::from_iter_values((0..ROWS).map(|i| format!("A{:08}", i / 2)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("l", DataType::Utf8, false),
        Field::new("r", DataType::Utf8, false),
    ]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(left), Arc::new(right)]).expect("batch");
    let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
    session
        .ctx
        .register_table("edges", Arc::new(table))
        .expect("register");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("resolve_identities_1M_edges");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("resolve_identities", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let df = session
                    .ctx
                    .sql("SELECT count(*), count(DISTINCT shared_id) FROM resolve_identities('edges', 'l', 'r')")
                    .await
                    .expect("plan");
                df.collect().await.expect("run")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, hashing, identity);
criterion_main!(benches);
