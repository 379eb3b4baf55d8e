//! What the command line accepts: clap's definitions of every command and its options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::shell::printer::PrintFormat;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "SQL engine for marketing and analytics delivery pipelines"
)]
pub struct Cli {
    /// Project folder holding sluice.toml and models/ (default: the current directory)
    #[arg(long, global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Memory the process may use, e.g. 4G or 60%: the engine spills to disk to stay under it (default: 70% of RAM)
    #[arg(long, global = true, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Interactive SQL shell (the default); scripted with -c, -f or standard input
    Shell(ShellArgs),
    /// Build the project's models: plan, execute, check, publish
    Run(RunArgs),
    /// Show what `run` would do: order, resolved SQL, inputs and outputs (writes nothing)
    Plan(RunArgs),
    /// Run the models' checks again on what is published now (writes test_results.json)
    Test(TestArgs),
    /// Apply the current erasure lists to published outputs, rewriting only affected files
    Erase(EraseArgs),
    /// Delete the files of Delta outputs that no version within --retain uses (and those of
    /// runs that never committed), so that erased rows are gone from storage too
    Vacuum(VacuumArgs),
    /// Compare a model's fresh result (or --left) with its published output (or --against)
    Diff(DiffArgs),
    /// Table and column lineage of the models, as JSON, Mermaid or Graphviz dot
    Lineage(LineageArgs),
    /// Write a static HTML site documenting sources, models, checks and lineage
    Docs(DocsArgs),
    /// Serve sources and models over the Postgres wire protocol (and HTTP with --http)
    Serve(ServeArgs),
    /// List sluice's SQL functions with signature, description and example
    Functions(FunctionsArgs),
    /// Generate synthetic data sets for benchmarks and load tests
    #[command(subcommand)]
    Gen(GenCommand),
    /// Run a node of a sluice cluster (Apache Ballista): scheduler or executor
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `--select` and `--var`: which models, with which variables.
#[derive(Debug, Default, Args)]
pub struct Selection {
    /// Models: name, +name (with ancestors), name+ (with descendants), folder/, tag:x
    /// (default: all)
    #[arg(short = 's', long, value_name = "SELECTOR", num_args = 1..)]
    pub select: Vec<String>,
    #[command(flatten)]
    pub vars: Vars,
}

/// `--var NAME=VALUE`, repeatable.
#[derive(Debug, Default, Args)]
pub struct Vars {
    /// Set a variable used as ${name} in model SQL and shell statements (repeatable),
    /// overriding [vars]
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub models: Selection,
    /// Stop at the first failing model
    #[arg(long)]
    pub fail_fast: bool,
    /// Rebuild incremental models from scratch instead of adding to them
    #[arg(long)]
    pub full_refresh: bool,
    /// Publish the models only when every model and check of the run succeeded
    #[arg(long)]
    pub all_or_nothing: bool,
    /// Fail volume and schema checks that have nothing published to compare with (CI jobs
    /// that must never publish unchecked)
    #[arg(long)]
    pub require_baseline: bool,
    /// Models built at the same time
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// POST the run results as JSON to this URL when the run fails
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
    /// With --notify: post after every run, not only failed ones
    #[arg(long, requires = "notify")]
    pub notify_always: bool,
    /// Run the models' queries on a sluice cluster (df://HOST:PORT of its scheduler); this
    /// process still plans, checks and publishes
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// Also write a JUnit XML report (one testsuite per model, a testcase per check) for CI
    /// systems
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Postgres address to listen on (default: [server].listen, else 127.0.0.1:5433)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also serve /health, /metrics and POST /query over HTTP on this address
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Arrow Flight SQL address for ADBC/JDBC clients (default: [server].flight, else off)
    #[arg(long, value_name = "ADDR")]
    pub flight: Option<String>,
    /// TLS certificate (PEM); with --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// TLS private key (PEM); with --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Allow DDL, COPY, INSERT, engine settings and reading files by path
    #[arg(long)]
    pub allow_write: bool,
    /// Connections open at once; more are refused (default: [server], else 64)
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Statements running at once; more wait their turn (default: [server], else the cores)
    #[arg(long, value_name = "N")]
    pub max_concurrent_queries: Option<usize>,
    /// Cancel statements running longer than this, e.g. 30s or 5m (default: [server], else none)
    #[arg(long, value_name = "DURATION")]
    pub statement_timeout: Option<String>,
    /// Memory one statement may hold before it spills or fails, e.g. 512M (default:
    /// [server], else --memory-limit divided by --max-concurrent-queries)
    #[arg(long, value_name = "SIZE")]
    pub query_memory_limit: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The model to compare
    pub model: String,
    /// Column(s) that identify a row, comma-separated
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',', required = true)]
    pub key: Vec<String>,
    /// Compare with this folder or S3 prefix instead of the published output
    #[arg(long, value_name = "LOCATION")]
    pub against: Option<String>,
    /// Take the left side from this folder or S3 prefix instead of a fresh build
    #[arg(long, value_name = "LOCATION")]
    pub left: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Exit 3 when the two sides differ
    #[arg(long)]
    pub fail_on_change: bool,
    #[command(flatten)]
    pub vars: Vars,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
}

#[derive(Debug, Default, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub models: Selection,
}

#[derive(Debug, Default, Args)]
pub struct VacuumArgs {
    /// Models whose Delta outputs to vacuum: name, +name, name+, folder/, tag:x (default: all)
    #[arg(value_name = "MODEL")]
    pub select: Vec<String>,
    /// Keep the files that versions of this last period use, e.g. 168h, 7d or 0h
    #[arg(long, value_name = "PERIOD", default_value = "168h")]
    pub retain: String,
    /// Needed to retain less than a week: older versions become unreadable
    #[arg(long)]
    pub confirm: bool,
    /// List the files that would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub vars: Vars,
}

#[derive(Debug, Default, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub models: Selection,
    /// Only the unit tests in tests/*.toml: models run on fixed rows, no data needed
    #[arg(long)]
    pub unit: bool,
    /// Also write a JUnit XML report (one testsuite per model, a testcase per check and
    /// per unit test) for CI systems
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Launch events with messy emails and phones, exporter duplicates, migrated accounts
    /// and deletion requests, in the example project's schema (deterministic per seed)
    Launch(GenLaunchArgs),
}

#[derive(Debug, Args)]
pub struct GenLaunchArgs {
    /// Event rows in total (exporter duplicates included); accounts are rows / 20
    #[arg(long, value_name = "N")]
    pub rows: u64,
    /// Folder to write into (launch_events/day=*/, accounts, migrations, deletions, countries)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20260501)]
    pub seed: u64,
    /// Format of the event files
    #[arg(long, value_enum, default_value = "csv")]
    pub format: crate::gen::GenFormat,
    /// Days of events, one folder each from 2026-05-01
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Order of event ids: ascending within each day, or a random permutation of all of them
    #[arg(long, value_enum, default_value = "sequential")]
    pub order: crate::gen::GenOrder,
    /// Event files: one folder per day, or one large file holding every day
    #[arg(long, value_enum, default_value = "day-folders")]
    pub layout: crate::gen::GenLayout,
    /// Percent of the events that go to 5 hot accounts (skewed keys); 0 spreads them evenly
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub hot_percent: u64,
}

#[derive(Debug, Args)]
pub struct LineageArgs {
    #[command(flatten)]
    pub models: Selection,
    #[arg(long, value_enum, default_value = "json")]
    pub format: crate::project::lineage::LineageFormat,
    /// Print what one column (model.column) is computed from, hop by hop to the sources
    #[arg(long, value_name = "MODEL.COLUMN")]
    pub column: Option<String>,
}

#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Folder to write the site into (index.html)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub vars: Vars,
}

#[derive(Debug, Default, Args)]
pub struct ShellArgs {
    /// Run SQL (repeatable); statements are separated by `;`
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub commands: Vec<String>,
    /// Run the statements in a file (repeatable)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Option<PrintFormat>,
    /// Write results to a file instead of standard output
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep going after a failing statement (the exit code still reports the failure)
    #[arg(long)]
    pub continue_on_error: bool,
    /// Rows the table format shows before "N more rows" (default: 40 interactive, all scripted)
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
    /// Run queries on a sluice cluster (df://HOST:PORT of its scheduler)
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub vars: Vars,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a Ballista scheduler: clients connect with --cluster df://ADDR
    Scheduler(SchedulerArgs),
    /// Start a Ballista executor with sluice's functions, joining a scheduler
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50050")]
    pub bind: String,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler's address (HOST:PORT or df://HOST:PORT)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Address for the data (Arrow Flight) service, reachable by the other executors
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    pub bind: String,
    /// Port of the task (gRPC) service (default: the bind port + 1)
    #[arg(long, value_name = "PORT")]
    pub grpc_port: Option<u16>,
    /// Tasks run at once (default: the number of cores)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub slots: Option<u16>,
    /// Folder for shuffle files (default: a temporary folder)
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FunctionsArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: PrintFormat,
}
