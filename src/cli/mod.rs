//! Command-line interface: dispatch of each command to its front end (the definitions are
//! in `args.rs`).

mod args;

use args::{
    Cli, ClusterCommand, Command, DiffArgs, DiffFormat, FunctionsArgs, GenCommand, GenLaunchArgs,
    LineageArgs, RunArgs, Selection, ServeArgs, ShellArgs, TestArgs, Vars,
};

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use crate::config::units::parse_memory_size;
use crate::config::Project;
use crate::error::{exit, Result, SluiceError};
use crate::project::ProjectPlan;
use crate::server::ServeOptions;
use crate::session::{build_session, Session, SessionOptions};
use crate::shell::printer::{print_batches, PrintFormat, PrintOptions};
use crate::shell::script::{run_script, Script};
use crate::shell::{run_interactive, Shell};

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
        Ok(plan) => options.models = crate::project::model_tables(&plan),
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
        Some(Command::Plan(args)) => plan(&cli, &args.models).await,
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
                .map(|&i| plan.planned[i].model.name.clone())
                .collect(),
        )
    };
    // A published model that would carry personal data unhashed fails the tests, as it
    // fails `run`.
    let checked = plan.select(&args.models.select)?;
    crate::project::policy::refuse_leaks(&session, &plan, &checked).await?;
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

async fn plan(cli: &Cli, models: &Selection) -> Result<()> {
    let (plan, session) = planned_session(cli, &models.vars)?;
    let selected = plan.select(&models.select)?;
    let increments = plan.increments(&session.ctx, &selected).await?;
    let personal = crate::project::policy::personal_data(&session, &plan).await?;
    print!("{}", plan.describe(&selected, &increments, &personal));
    // As `run` would: a published model carrying personal data unhashed fails the plan.
    crate::project::policy::refuse_leaks(&session, &plan, &selected).await?;
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
    let mut options = ServeOptions::resolve(requested, &project.config.server)?;
    // Published models that carry personal data unhashed, as their config allows.
    if let Ok(plan) = crate::project::build_plan(&project, &project.vars()) {
        options.personal_outputs = plan
            .models()
            .filter(|m| m.materialized != crate::project::model::Materialized::View)
            .flat_map(|m| m.allow_personal.iter().map(|c| format!("{}.{c}", m.name)))
            .collect();
    }
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
