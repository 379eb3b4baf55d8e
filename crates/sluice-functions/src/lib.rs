//! sluice's SQL functions for DataFusion: PII normalisation and hashing, HMAC keyed by named
//! secrets, shared user ids, identity resolution, funnels and retention, and Spark's hash
//! functions. One file per function family; [`register_all`] adds them all to a session and
//! [`docs`] describes them (sluice prints it for `sluice functions` and `\df`).
//!
//! The crate depends on DataFusion only: a program with its own secrets gives them to
//! `hmac_sha256` through [`Secrets`].

mod args;
mod funnel;
mod hashing;
pub mod identity;
mod pii;
mod regexp_replace;
mod retention;
mod sha256_lanes;
mod shared_id;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use datafusion::error::Result;

/// Where `hmac_sha256` finds its keys: the program's named secrets. A key is read when a
/// query first uses it and kept in memory only; it is never part of a plan or a message.
pub trait Secrets: Send + Sync + std::fmt::Debug {
    /// A secret of this name is declared (checked when a query is planned).
    fn declares(&self, name: &str) -> bool;
    /// The secret's bytes, or why they cannot be read (a message without the secret).
    fn read(&self, name: &str) -> std::result::Result<Vec<u8>, String>;
}

/// `name` as a SQL identifier, always quoted, so keywords and mixed case survive.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What `sluice functions` and `\df` print for one function.
#[derive(Debug, Clone)]
pub struct FunctionDoc {
    pub name: &'static str,
    pub kind: &'static str,
    pub signature: &'static str,
    pub description: &'static str,
    pub example: &'static str,
}

/// Function docs as the table `sluice functions` prints and `\df` shows (without the
/// example column).
pub fn docs_table(docs: &[FunctionDoc]) -> Result<RecordBatch> {
    let column = |f: fn(&FunctionDoc) -> &str| {
        Arc::new(StringArray::from(docs.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let schema = Arc::new(Schema::new(
        ["name", "kind", "signature", "description", "example"]
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(
        schema,
        vec![
            column(|d| d.name),
            column(|d| d.kind),
            column(|d| d.signature),
            column(|d| d.description),
            column(|d| d.example),
        ],
    )
    .map_err(Into::into)
}

/// Every function sluice adds to DataFusion, in the order they are listed.
pub fn docs() -> Vec<FunctionDoc> {
    let mut docs = vec![
        hashing::SHA256_HEX_DOC,
        hashing::HMAC_SHA256_DOC,
        pii::NORMALIZE_EMAIL_DOC,
        pii::NORMALIZE_PHONE_DOC,
        pii::HASH_PII_DOC,
        shared_id::DOC,
        identity::DOC,
        funnel::DOC,
        retention::DOC,
    ];
    docs.extend(SPARK_DOCS.iter().cloned());
    docs
}

const SPARK_DOCS: [FunctionDoc; 4] = [
    FunctionDoc {
        name: "sha2",
        kind: "scalar",
        signature: "sha2(value, bit_length) -> VARCHAR",
        description: "Spark-compatible SHA-2 (224, 256, 384, 512; 0 means 256) as lowercase hex.",
        example: "SELECT sha2('Spark', 256)",
    },
    FunctionDoc {
        name: "sha1",
        kind: "scalar",
        signature: "sha1(value) -> VARCHAR",
        description: "Spark-compatible SHA-1 as lowercase hex.",
        example: "SELECT sha1('Spark')",
    },
    FunctionDoc {
        name: "xxhash64",
        kind: "scalar",
        signature: "xxhash64(value, ...) -> BIGINT",
        description: "Spark-compatible 64-bit xxHash of the arguments (seed 42).",
        example: "SELECT xxhash64('Spark', 123)",
    },
    FunctionDoc {
        name: "crc32",
        kind: "scalar",
        signature: "crc32(value) -> BIGINT",
        description: "Spark-compatible CRC-32 checksum.",
        example: "SELECT crc32('Spark')",
    },
];

/// `hmac_sha256` reading its keys from `secrets` (to replace the registered one).
pub fn hmac_sha256(secrets: Arc<dyn Secrets>) -> ScalarUDF {
    ScalarUDF::from(hashing::HmacSha256::new(secrets))
}

/// Register every sluice function in a session; `hmac_sha256` reads its keys from
/// `secrets`.
pub fn register_all(ctx: &SessionContext, secrets: Arc<dyn Secrets>) -> Result<()> {
    ctx.register_udf(ScalarUDF::from(hashing::Sha256Hex::new()));
    ctx.register_udf(ScalarUDF::from(hashing::HmacSha256::new(secrets)));
    ctx.register_udf(ScalarUDF::from(pii::NormalizeEmail::new()));
    ctx.register_udf(ScalarUDF::from(pii::NormalizePhone::new()));
    ctx.register_udf(ScalarUDF::from(pii::HashPii::new()));
    ctx.register_udf(ScalarUDF::from(shared_id::SharedId::new()));
    // Replaces DataFusion's function of the same name, which it calls for what it does not
    // answer itself.
    ctx.register_udf(ScalarUDF::from(regexp_replace::RegexpReplace::new()));
    ctx.register_udaf(AggregateUDF::from(funnel::WindowFunnel::new()));
    ctx.register_udaf(AggregateUDF::from(retention::Retention::new()));
    ctx.register_udtf(
        "resolve_identities",
        Arc::new(identity::ResolveIdentities::new()),
    );
    // Spark's names that DataFusion already defines keep DataFusion's meaning.
    let builtin = ctx.state().scalar_functions().clone();
    for f in datafusion_spark::function::hash::functions() {
        if builtin.contains_key(f.name()) {
            continue;
        }
        ctx.register_udf(f.as_ref().clone());
    }
    Ok(())
}
