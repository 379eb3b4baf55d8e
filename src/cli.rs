//! Command-line interface: clap definitions and dispatch to the front ends.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::units::parse_memory_size;
use crate::config::Project;
use crate::error::{exit, Result, SluiceError};
use crate::project::ProjectPlan;
use crate::server::ServeOptions;
use crate::session::{build_session, Session, SessionOptions};
use crate::shell::printer::{print_batches, PrintFormat, PrintOptions};
use crate::shell::script::{run_script, Script};
use crate::shell::{run_interactive, Shell};

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
    /// Memory the engine may use before spilling to disk, e.g. 4G or 60% (default: 70% of RAM)
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

/// Parse, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return exit::USAGE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn load_project(cli: &Cli) -> Result<Arc<Project>> {
    let dir = cli.project.clone().unwrap_or_else(|| PathBuf::from("."));
    Ok(Arc::new(Project::load(&dir)?))
}

fn session_options(cli: &Cli) -> Result<SessionOptions> {
    let mut options = SessionOptions::new();
    if let Some(m) = &cli.memory_limit {
        options.memory_limit = Some(parse_memory_size(m)?);
    }
    Ok(options)
}

/// Session options for a front end that queries models by name (the shell, the server):
/// the project's models declared; a broken model warns instead of stopping it.
fn querying_models(cli: &Cli, project: &Project) -> Result<SessionOptions> {
    let mut options = session_options(cli)?;
    // Interactive front ends query the same small tables again and again.
    options.source_caching =
        crate::sources::SourceCaching::SmallUpTo(crate::session::SMALL_SOURCE_BYTES);
    match crate::project::build_plan(project, &project.vars()) {
        Ok(plan) => options.models = crate::project::model_tables(project, &plan),
        Err(e) => eprintln!("warning: models not loaded: {e}"),
    }
    Ok(options)
}

async fn dispatch(cli: Cli) -> Result<()> {
    match &cli.command {
        None => shell(&cli, &ShellArgs::default()).await,
        Some(Command::Shell(args)) => shell(&cli, args).await,
        Some(Command::Functions(args)) => functions(args),
        Some(Command::Run(args)) => run(&cli, args).await,
        Some(Command::Plan(args)) => plan(&cli, &args.models),
        Some(Command::Test(args)) => test(&cli, args).await,
        Some(Command::Gen(GenCommand::Launch(args))) => gen_launch(args),
        Some(Command::Erase(args)) => {
            let (plan, session) = planned_session(&cli, &args.models.vars)?;
            let results =
                crate::project::erase::erase(&session, &plan, &args.models.select).await?;
            if results.results.is_empty() {
                eprintln!("no published model names an erasure list");
            }
            results.outcome(false)
        }
        Some(Command::Vacuum(args)) => {
            let retain = crate::project::vacuum::parse_retention(&args.retain)?;
            let (plan, session) = planned_session(&cli, &args.vars)?;
            let done = crate::project::vacuum::vacuum(
                &session,
                &plan,
                &args.select,
                retain,
                args.confirm,
                args.dry_run,
            )
            .await?;
            for v in done {
                let verb = if v.dry_run { "would delete" } else { "deleted" };
                println!(
                    "{:<28} {verb} {} files from {}",
                    v.model,
                    v.files.len(),
                    v.location
                );
                for f in &v.files {
                    println!("    {f}");
                }
            }
            Ok(())
        }
        Some(Command::Lineage(args)) => lineage(&cli, args).await,
        Some(Command::Diff(args)) => diff(&cli, args).await,
        Some(Command::Docs(args)) => {
            let (plan, session) = planned_session(&cli, &args.vars)?;
            let index = crate::project::docs::write_site(&session, &plan, &args.out).await?;
            eprintln!("wrote {}", index.display());
            Ok(())
        }
        Some(Command::Serve(args)) => serve(&cli, args).await,
        Some(Command::Cluster(ClusterCommand::Scheduler(args))) => {
            let project = load_project(&cli)?;
            crate::cluster::run_scheduler(project, &session_options(&cli)?, &args.bind).await
        }
        Some(Command::Cluster(ClusterCommand::Executor(args))) => {
            let project = load_project(&cli)?;
            let executor = crate::cluster::ExecutorArgs {
                scheduler: &args.scheduler,
                bind: &args.bind,
                grpc_port: args.grpc_port,
                slots: args.slots.map(usize::from),
                work_dir: args.work_dir.as_ref().map(|p| p.display().to_string()),
            };
            crate::cluster::run_executor(project, &session_options(&cli)?, &executor).await
        }
    }
}

async fn shell(cli: &Cli, args: &ShellArgs) -> Result<()> {
    let project = load_project(cli)?;
    let options = cluster_options(querying_models(cli, &project)?, args.cluster.as_deref()).await?;
    let session = build_session(project, &options)?;
    let script = Script {
        commands: args.commands.clone(),
        files: args.files.clone(),
    };
    let interactive = script.is_empty() && std::io::stdin().is_terminal();
    let mut shell = Shell::new(
        session,
        args.format.unwrap_or(PrintFormat::Table),
        interactive,
    );
    shell.continue_on_error = args.continue_on_error;
    shell.vars = vars(&shell.session.project, &args.vars)?;
    if let Some(n) = args.max_rows {
        shell.print.max_rows = Some(n);
    }
    if let Some(path) = &args.output {
        shell.set_output(Some(path))?;
    }
    if interactive {
        let result = run_interactive(&mut shell).await;
        shell.flush();
        return result;
    }
    run_script(&mut shell, &script).await
}

/// Unit tests, then (without --unit) the checks on what is published; the exit code says
/// the worse of the two.
async fn test(cli: &Cli, args: &TestArgs) -> Result<()> {
    let (plan, session) = planned_session(cli, &args.models.vars)?;
    let selected: Option<std::collections::BTreeSet<String>> = if args.models.select.is_empty() {
        None
    } else {
        let indexes = plan.select(&args.models.select)?;
        Some(
            indexes
                .iter()
                .map(|&i| plan.models[i].name.clone())
                .collect(),
        )
    };
    let started = std::time::Instant::now();
    let units = crate::project::unit::run_unit_tests(
        &session.project,
        &session_options(cli)?,
        selected.as_ref(),
    )
    .await?;
    let (summary, unit_result) =
        crate::project::unit::unit_outcome(&units, started.elapsed().as_secs_f64());
    if !units.is_empty() || args.unit {
        eprintln!("{summary}");
    }
    if args.unit {
        if let Some(path) = &args.junit {
            crate::project::junit::write_junit(path, None, &units)?;
        }
        return unit_result;
    }
    let results = crate::project::test(&session, &plan, &args.models.select).await?;
    eprintln!("{}", results.test_summary());
    if let Some(path) = &args.junit {
        crate::project::junit::write_junit(path, Some(&results), &units)?;
    }
    match (unit_result, results.outcome(false)) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(if a.exit_code() == crate::error::exit::SQL {
            a
        } else {
            b
        }),
        (Ok(()), Ok(())) => Ok(()),
    }
}

async fn diff(cli: &Cli, args: &DiffArgs) -> Result<()> {
    let (plan, session) = planned_session(cli, &args.vars)?;
    let options = crate::project::diff::DiffOptions {
        key: args.key.clone(),
        against: args.against.clone(),
        left: args.left.clone(),
    };
    let d = crate::project::diff::diff(&session, &plan, &args.model, &options).await?;
    match args.format {
        DiffFormat::Text => print!("{}", d.render()),
        DiffFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&d).map_err(|e| SluiceError::sql(e.to_string()))?
        ),
    }
    if args.fail_on_change && d.differs() {
        return Err(SluiceError::Check(format!(
            "model `{}`: the left side differs from {}",
            d.model, d.right
        )));
    }
    Ok(())
}

fn plan(cli: &Cli, models: &Selection) -> Result<()> {
    let project = load_project(cli)?;
    let plan = crate::project::build_plan(&project, &vars(&project, &models.vars)?)?;
    let selected = plan.select(&models.select)?;
    print!("{}", plan.describe(&project, &selected));
    Ok(())
}

async fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    let options = cluster_options(session_options(cli)?, args.cluster.as_deref()).await?;
    let (plan, session) = planned_session_with(cli, &args.models.vars, &options)?;
    let options = crate::project::RunOptions {
        select: args.models.select.clone(),
        fail_fast: args.fail_fast,
        full_refresh: args.full_refresh,
        all_or_nothing: args.all_or_nothing,
        threads: usize::from(args.threads),
        require_baseline: args.require_baseline,
    };
    let results = crate::project::run(&session, &plan, &options).await?;
    let failed = results.any_error() || results.any_check_failure();
    if let Some(url) = &args.notify {
        if failed || args.notify_always {
            match crate::project::notify::post(url, &results).await {
                Ok(status) => eprintln!("notified the webhook (HTTP {status})"),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    }
    eprintln!("{}", results.run_summary(&session.project.records_dir()));
    if let Some(path) = &args.junit {
        crate::project::junit::write_junit(path, Some(&results), &[])?;
    }
    results.outcome(true)
}

async fn serve(cli: &Cli, args: &ServeArgs) -> Result<()> {
    let project = load_project(cli)?;
    let requested = crate::server::ServeRequest {
        listen: args.listen.clone(),
        http: args.http.clone(),
        flight: args.flight.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        allow_write: args.allow_write,
        max_connections: args.max_connections,
        max_concurrent_queries: args.max_concurrent_queries,
        statement_timeout: args.statement_timeout.clone(),
        query_memory_limit: args.query_memory_limit.clone(),
    };
    let options = ServeOptions::resolve(requested, &project.config.server)?;
    let session_options = querying_models(cli, &project)?;
    crate::server::serve(project, session_options, options).await
}

/// The project's variables with `--var`s over them.
fn vars(project: &Project, settings: &Vars) -> Result<BTreeMap<String, String>> {
    let mut vars = project.vars();
    for v in &settings.vars {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| SluiceError::Usage(format!("--var {v}: expected NAME=VALUE")))?;
        vars.insert(k.trim().to_string(), val.to_string());
    }
    Ok(vars)
}

/// The project's plan (with `--var`s) and the session to run it in.
fn planned_session(cli: &Cli, vars: &Vars) -> Result<(ProjectPlan, Session)> {
    planned_session_with(cli, vars, &session_options(cli)?)
}

fn planned_session_with(
    cli: &Cli,
    settings: &Vars,
    options: &SessionOptions,
) -> Result<(ProjectPlan, Session)> {
    let project = load_project(cli)?;
    let plan = crate::project::build_plan(&project, &vars(&project, settings)?)?;
    let session = build_session(project, options)?;
    Ok((plan, session))
}

/// `options` running on the cluster at `url`, once its scheduler answers.
async fn cluster_options(mut options: SessionOptions, url: Option<&str>) -> Result<SessionOptions> {
    if let Some(url) = url {
        crate::cluster_client::check_reachable(url).await?;
        options.cluster = Some(url.to_string());
    }
    Ok(options)
}

fn gen_launch(args: &GenLaunchArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let options = crate::gen::GenOptions {
        rows: args.rows,
        out: args.out.clone(),
        seed: args.seed,
        format: args.format,
        days: args.days,
        order: args.order,
        layout: args.layout,
        hot_percent: args.hot_percent,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let s = crate::gen::launch(&options)?;
    eprintln!("{}", s.summary(args.days, started.elapsed(), &args.out));
    Ok(())
}

async fn lineage(cli: &Cli, args: &LineageArgs) -> Result<()> {
    let (plan, session) = planned_session(cli, &args.models.vars)?;
    let lineage = crate::project::lineage::lineage(&session, &plan, &args.models.select).await?;
    match &args.column {
        Some(column) => {
            let sources = |c: &str| {
                c.split_once('.')
                    .is_some_and(|(t, _)| session.project.config.sources.contains_key(t))
            };
            print!("{}", lineage.upstream(column, &sources)?);
        }
        None => println!("{}", lineage.render(args.format)),
    }
    Ok(())
}

fn functions(args: &FunctionsArgs) -> Result<()> {
    let batch = crate::functions::docs_table(&crate::session::function_docs())?;
    let options = PrintOptions {
        format: args.format,
        max_rows: None,
        max_width: None,
    };
    print_batches(&options, batch.schema(), &[batch], &mut std::io::stdout())
}
