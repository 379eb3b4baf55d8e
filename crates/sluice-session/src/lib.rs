//! The one session builder: every front end (shell, server, run, cluster executors) gets
//! its DataFusion session here, with the same memory limit, spilling, object stores,
//! sources and functions.

pub mod cluster_client;

// The crates below, under the names the modules use.
use sluice_core::{config, error, sources, storage, store_fault};
pub use sluice_engine as engine;
use sluice_functions as functions;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::catalog::{DynamicFileCatalog, SchemaProvider, UrlTableFactory};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::units::default_memory_limit;
use crate::config::{Project, S3Config};
use crate::error::{Result, SluiceError};
use crate::sources::{ModelTable, PathTableFactory, ProjectSchema, SourceCaching, SourceDef};
use crate::storage::StoreRegistry;

/// Sources up to this size are held in memory by the shell and the server (about twice
/// as much as Arrow for a CSV file).
pub const SMALL_SOURCE_BYTES: u64 = 32 << 20;

#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Bytes the session may use before operators spill; None = the default fraction of RAM.
    pub memory_limit: Option<usize>,
    /// Parallelism; None = the number of cores.
    pub target_partitions: Option<usize>,
    /// Allow `SELECT * FROM 'path'` (the shell and run do; the read-only server does not).
    pub query_files_by_path: bool,
    /// Run queries on the Ballista cluster whose scheduler is at this `df://host:port`.
    pub cluster: Option<String>,
    /// This session plans or executes for a cluster (scheduler, executor): only operators
    /// that can be sent between them.
    pub distributed: bool,
    /// Project models queryable by name (the shell and the server declare them; `run`
    /// declares what it builds itself).
    pub models: Vec<(String, ModelTable)>,
    /// No project sources: the tables are only what the caller registers (unit tests'
    /// fixtures, so a test never reads real data).
    pub without_sources: bool,
    /// Which sources are held in memory after their first read (the shell and the server
    /// hold small ones: the same small tables are queried again and again).
    pub source_caching: SourceCaching,
    /// Rows per batch; None = chosen by the memory limit (see `batch_rows`).
    pub batch_rows: Option<usize>,
}

impl SessionOptions {
    pub fn new() -> Self {
        SessionOptions {
            query_files_by_path: true,
            ..Default::default()
        }
    }
}

/// Per-bucket S3 settings that sources give themselves; one bucket, one set of settings.
fn bucket_settings(project: &Project) -> Result<HashMap<String, S3Config>> {
    let mut out: HashMap<String, (String, S3Config)> = HashMap::new();
    for (name, source) in &project.config.sources {
        let Some(s3) = &source.s3 else { continue };
        let Some(bucket) = crate::store_fault::bucket_of(&source.location) else {
            return Err(SluiceError::Usage(format!(
                "source `{name}`: `s3` settings need an s3:// location, not {}",
                source.location
            )));
        };
        if let Some((other, _)) = out.get(bucket) {
            return Err(SluiceError::Usage(format!(
                "sources `{other}` and `{name}` both give S3 settings for bucket `{bucket}`; give them once"
            )));
        }
        out.insert(bucket.to_string(), (name.clone(), s3.clone()));
    }
    Ok(out.into_iter().map(|(b, (_, s))| (b, s)).collect())
}

/// `hmac_sha256` reads the project's `[secrets]`.
#[derive(Debug)]
struct ProjectSecrets(Arc<Project>);

impl crate::functions::Secrets for ProjectSecrets {
    fn declares(&self, name: &str) -> bool {
        self.0.config.secrets.contains_key(name)
    }

    fn read(&self, name: &str) -> std::result::Result<Vec<u8>, String> {
        self.0.secret(name).map_err(|e| e.to_string())
    }
}

/// A session with the project's sources and sluice's functions registered.
pub struct Session {
    pub ctx: SessionContext,
    pub project: Arc<Project>,
    pub schema: Arc<ProjectSchema>,
    /// The memory pool's size (see [`memory_pool_size`]).
    pub memory_limit: usize,
    /// Queries run on a Ballista cluster (`--cluster`).
    pub on_cluster: bool,
}

/// `delta_history`, which this session builder registers next to sluice's functions (it
/// reads the project's Delta tables, so it lives with the sources).
pub const DELTA_HISTORY_DOC: crate::functions::FunctionDoc = crate::functions::FunctionDoc {
    name: "delta_history",
    kind: "table",
    signature: "delta_history('source_or_model' | 'path') -> TABLE(version, committed_at, operation, run_id, rows, checks)",
    description: "The commits of a Delta table (a source, a model with format = \"delta\", or a path), \
                  newest first, with the run sluice recorded in each: its run id, rows and checks passed.",
    example: "SELECT version, operation, run_id, rows, checks FROM delta_history('partner_players')",
};

/// Every function a session has beyond DataFusion's, as `sluice functions` and `\df` list them.
pub fn function_docs() -> Vec<crate::functions::FunctionDoc> {
    let mut docs = crate::functions::docs();
    let at = docs
        .iter()
        .position(|d| d.name == "resolve_identities")
        .map_or(docs.len(), |i| i + 1);
    docs.insert(at, DELTA_HISTORY_DOC);
    docs
}

/// DataFusion's rows per batch.
pub const DEFAULT_BATCH_ROWS: usize = 8 * 1024;

/// Rows per batch when the memory pool is large: every operator's per-batch work
/// (function calls, allocations, hash probes set up, Parquet pages cut) is paid a quarter
/// as often (benches/pipeline, README: 0.93 of the time at 10M rows). A spilling
/// operator needs room for a few batches, so small pools keep DataFusion's size.
const LARGE_BATCH_ROWS: usize = 32 * 1024;
const LARGE_BATCH_MIN_MEMORY: usize = 1 << 30;

fn batch_rows(pool_size: usize) -> usize {
    if pool_size >= LARGE_BATCH_MIN_MEMORY {
        LARGE_BATCH_ROWS
    } else {
        DEFAULT_BATCH_ROWS
    }
}

/// The share of `--memory-limit` the engine's memory pool gets. The pool counts what
/// operators hold (batches, hash tables, sort buffers); file reads in flight, encoders'
/// scratch, allocator slack and the binary itself are not counted, and came to 8-9% over
/// the pool at peak (benches/pipeline: 100M rows under a 4 GiB pool peaked at 4,434 MB,
/// 30M rows under 2 GiB at 2,224 MiB). The limit bounds the process, as a container's
/// would, so an eighth of it is left for them.
pub fn memory_pool_size(memory_limit: usize) -> usize {
    memory_limit - memory_limit / 8
}

pub fn build_session(project: Arc<Project>, options: &SessionOptions) -> Result<Session> {
    let pool_size = memory_pool_size(options.memory_limit.unwrap_or_else(default_memory_limit));
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(pool_size),
        NonZeroUsize::new(5).expect("non-zero"),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(DiskManagerBuilder::default())
        // DataFusion caches file listings forever, keyed by path alone: a long-lived shell
        // or server would never see new files, and a run would read a republished folder
        // through its old listing. Listing again per query is what users expect.
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .with_object_store_registry(Arc::new(StoreRegistry::new(
            project.config.storage.s3.clone(),
            bucket_settings(&project)?,
        )))
        .build_arc()
        .map_err(|e| SluiceError::Usage(format!("cannot set up the runtime: {e}")))?;

    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public");
    // A folder source reads the files beneath it, and `dir/*/*.csv` globs match whole paths.
    config
        .options_mut()
        .execution
        .listing_table_ignore_subdirectory = false;
    // Parquet strings as plain Utf8, like CSV's: DataFusion's string functions are far
    // slower on string views (`lower(btrim(email))` over 9.2M rows: 2.05 s against 0.09 s
    // in benches/pipeline), and a delivery cleans and hashes every string it reads.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config = config.with_batch_size(
        options
            .batch_rows
            .unwrap_or_else(|| batch_rows(pool_size))
            .max(1),
    );
    // Spans on identifiers let planning errors point at the line and column they are about.
    config.options_mut().sql_parser.collect_spans = true;
    config = config.with_extension(Arc::new(crate::sources::postgres::Databases::of_project(
        &project,
    )));
    config
        .options_mut()
        .extensions
        .insert(crate::engine::options::SluiceOptions::default());
    if let Some(n) = options.target_partitions {
        config = config.with_target_partitions(n.max(1));
    }
    if options.cluster.is_some() {
        config = crate::cluster_client::client_config(config);
    }
    let dedup = crate::engine::first_row::DedupFirstRow {
        column_keys_only: options.distributed,
    };
    // Operators without a cluster codec stay out of plans that travel to executors.
    let local_operators = !options.distributed && options.cluster.is_none();
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rules(logical_rules())
        .with_physical_optimizer_rules(physical_rules(dedup, local_operators))
        .build();
    let state = match &options.cluster {
        Some(url) => crate::cluster_client::client_state(state, url)?,
        None => state,
    };
    // Functions are registered after the cluster upgrade, which resets the function lists.
    let ctx = SessionContext::new_with_state(state);

    let sources = if options.without_sources {
        Default::default()
    } else {
        SourceDef::from_project(&project)
    };
    let caching = if options.cluster.is_some() || options.distributed {
        SourceCaching::Off
    } else {
        options.source_caching
    };
    let schema = Arc::new(ProjectSchema::new(sources).caching(caching));
    schema.declare_models(options.models.iter().cloned());
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| SluiceError::Usage("default catalog missing".into()))?;
    catalog
        .register_schema("public", schema.clone() as Arc<dyn SchemaProvider>)
        .map_err(|e| SluiceError::Usage(format!("cannot register sources: {e}")))?;

    crate::functions::register_all(&ctx, Arc::new(ProjectSecrets(project.clone())))
        .map_err(|e| SluiceError::Usage(format!("cannot register functions: {e}")))?;
    ctx.register_udtf(
        "delta_history",
        Arc::new(crate::sources::DeltaHistory::new(&schema)),
    );

    let ctx = if options.query_files_by_path {
        let factory = Arc::new(PathTableFactory::default());
        let catalogs = Arc::new(DynamicFileCatalog::new(
            ctx.state().catalog_list().clone(),
            factory.clone() as Arc<dyn UrlTableFactory>,
        ));
        let ctx: SessionContext = ctx
            .into_state_builder()
            .with_catalog_list(catalogs)
            .build()
            .into();
        factory.attach(ctx.state_weak_ref());
        ctx
    } else {
        ctx
    };
    schema.attach(ctx.state_weak_ref());
    Ok(Session {
        ctx,
        project,
        schema,
        memory_limit: pool_size,
        on_cluster: options.cluster.is_some(),
    })
}

/// DataFusion's logical rules with sluice's: plain counts beside a distinct count made
/// splittable just before DataFusion splits distinct aggregates into two group-bys.
fn logical_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    use crate::engine::distinct_counts::{CountsBesideDistinct, BEFORE_RULE};
    let mut rules = Optimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == BEFORE_RULE)
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(CountsBesideDistinct));
    rules
}

/// DataFusion's physical rules with sluice's: join sides by file size right after
/// DataFusion's join selection, lookup joins before dynamic filters are added (local
/// plans only), and the `row_number() = 1` dedup last.
fn physical_rules(
    dedup: crate::engine::first_row::DedupFirstRow,
    local_operators: bool,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    use crate::engine::join_sides::{BuildOnSmallerFiles, AFTER_RULE};
    use crate::engine::lookup_join::{LookupJoins, BEFORE_RULE};
    let mut rules = PhysicalOptimizer::new().rules;
    if let Some(i) = rules.iter().position(|r| r.name() == AFTER_RULE) {
        rules.insert(i + 1, Arc::new(BuildOnSmallerFiles));
    }
    if local_operators {
        let at = rules
            .iter()
            .rposition(|r| r.name() == BEFORE_RULE)
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(LookupJoins));
    }
    rules.push(Arc::new(dedup));
    rules
}
