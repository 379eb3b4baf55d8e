//! Scale-out on Apache Ballista: `sluice cluster scheduler`, `sluice cluster executor`, and
//! the client side of `run --cluster` / `shell --cluster`. Every role builds its session
//! with `session::build_session` from the same project, so the executors have sluice's
//! functions, object stores and memory limit; the codecs carry sluice's own tables and
//! operators between them.

pub mod codec;
pub mod planner;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::config::Project;
use crate::error::{Result, SluiceError};
use crate::session::{build_session, SessionOptions};
use codec::{SluiceLogicalCodec, SluicePhysicalCodec};
use planner::ClusterPlanner;

/// Ballista's own log lines (jobs, stages, tasks, executors joining and leaving) on stderr:
/// what an operator watches on a cluster node. Other crates only from warnings up.
struct NodeLog;

impl log::Log for NodeLog {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn
            || (meta.level() <= log::Level::Info && meta.target().starts_with("ballista"))
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "{} {:<5} {}",
                chrono::Utc::now().format("%H:%M:%S%.3f"),
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn start_node_log() {
    static LOG: NodeLog = NodeLog;
    if log::set_logger(&LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Executors heartbeat this often; the scheduler gives up on one after EXECUTOR_TIMEOUT_SECS.
const HEARTBEAT_SECS: u64 = 2;
const EXECUTOR_TIMEOUT_SECS: u64 = 10;

/// `df://host:port` as host and port.
pub fn parse_cluster_url(url: &str) -> Result<(String, u16)> {
    let bad = |why: &str| {
        SluiceError::Usage(format!(
            "invalid cluster address `{url}`: {why} (expected df://HOST:PORT, e.g. df://127.0.0.1:50050)"
        ))
    };
    let rest = url
        .strip_prefix("df://")
        .ok_or_else(|| bad("it must start with df://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("the port is missing"))?;
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port is not a number"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Fail fast, naming the address, when nothing listens there: Ballista's own client would
/// only fail at the first query, with a transport error.
pub async fn check_reachable(url: &str) -> Result<()> {
    let (host, port) = parse_cluster_url(url)?;
    let unreachable = |why: String| {
        SluiceError::Usage(format!(
            "cannot reach the sluice cluster scheduler at {url}: {why}; start one with `sluice cluster scheduler --bind {host}:{port}`"
        ))
    };
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer within 5 s".into())),
    }
}

/// The session config a cluster client starts from: Ballista's settings, and sluice's
/// codec for the plans it sends.
pub fn client_config(config: SessionConfig) -> SessionConfig {
    config
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(SluiceLogicalCodec::default()))
}

/// A client session state whose queries run on the cluster at `url`: Ballista's planner,
/// behind sluice's, which resolves what only the client knows first.
pub fn client_state(state: SessionState, url: &str) -> Result<SessionState> {
    let (host, port) = parse_cluster_url(url)?;
    let state = state
        .upgrade_for_ballista(format!("df://{host}:{port}"))
        .map_err(|e| SluiceError::Usage(format!("cannot set up the cluster client: {e}")))?;
    let inner = state.query_planner().clone();
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(ClusterPlanner { inner }))
        .build())
}

fn parse_bind(bind: &str) -> Result<SocketAddr> {
    bind.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SluiceError::Usage(format!("invalid address `{bind}`: expected HOST:PORT")))
}

/// The session every cluster role plans and executes with: the project's, built the one
/// way, with operators that can be sent to executors.
fn role_state(project: Arc<Project>, options: &SessionOptions) -> Result<SessionState> {
    let options = SessionOptions {
        distributed: true,
        query_files_by_path: false,
        cluster: None,
        ..options.clone()
    };
    Ok(build_session(project, &options)?.ctx.state())
}

/// Run a scheduler until the process is stopped.
pub async fn run_scheduler(
    project: Arc<Project>,
    options: &SessionOptions,
    bind: &str,
) -> Result<()> {
    let addr = parse_bind(bind)?;
    start_node_log();
    let base = role_state(project, options)?;
    let physical = Arc::new(SluicePhysicalCodec::new(base.clone()));
    let session_builder = Arc::new(move |config: SessionConfig| {
        Ok(SessionStateBuilder::new_from_existing(base.clone())
            .with_config(config)
            .build())
    });
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host: addr.ip().to_string(),
        override_session_builder: Some(session_builder),
        override_logical_codec: Some(Arc::new(SluiceLogicalCodec::default())),
        override_physical_codec: Some(physical),
        // An executor that stops heartbeating is declared dead after this long: its tasks
        // are retried on the others, and with none left the queries fail instead of
        // waiting (Ballista's defaults, 180 s, leave a client hanging for minutes).
        executor_timeout_seconds: EXECUTOR_TIMEOUT_SECS,
        expire_dead_executor_interval_seconds: 2,
        no_executors_grace_period_seconds: EXECUTOR_TIMEOUT_SECS,
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| SluiceError::Usage(format!("cannot start the scheduler: {e}")))?;
    println!("sluice cluster scheduler listening on {addr} (clients: --cluster df://{addr})");
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(|e| SluiceError::Usage(format!("scheduler on {addr} stopped: {e}")))
}

pub struct ExecutorArgs<'a> {
    pub scheduler: &'a str,
    pub bind: &'a str,
    /// Port for Ballista's gRPC service; None = the bind port + 1.
    pub grpc_port: Option<u16>,
    pub slots: Option<usize>,
    pub work_dir: Option<String>,
}

/// Run an executor registered with the scheduler until the process is stopped.
pub async fn run_executor(
    project: Arc<Project>,
    options: &SessionOptions,
    args: &ExecutorArgs<'_>,
) -> Result<()> {
    let scheduler = args
        .scheduler
        .strip_prefix("df://")
        .unwrap_or(args.scheduler);
    let (scheduler_host, scheduler_port) = parse_cluster_url(&format!("df://{scheduler}"))?;
    let addr = parse_bind(args.bind)?;
    let grpc_port = match args.grpc_port {
        Some(p) => p,
        None => addr.port().checked_add(1).ok_or_else(|| {
            SluiceError::Usage(format!(
                "--bind {addr}: give --grpc-port, the next port is out of range"
            ))
        })?,
    };
    start_node_log();
    let base = role_state(project, options)?;
    let runtime = base.runtime_env().clone();
    let config = ExecutorProcessConfig {
        bind_host: addr.ip().to_string(),
        external_host: Some(addr.ip().to_string()),
        port: addr.port(),
        grpc_port,
        scheduler_host,
        scheduler_port,
        // Keep retrying while the scheduler starts, then fail with its address.
        scheduler_connect_timeout_seconds: 30,
        vcores: args.slots.unwrap_or(0),
        work_dir: args.work_dir.clone(),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: HEARTBEAT_SECS,
        memory_pool_size: options.memory_limit.map(|m| m as u64),
        override_function_registry: Some(Arc::new((&base).into())),
        override_runtime_producer: Some(Arc::new(move |_| Ok(runtime.clone()))),
        override_logical_codec: Some(Arc::new(SluiceLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(SluicePhysicalCodec::new(base.clone()))),
        ..ExecutorProcessConfig::default()
    };
    println!(
        "sluice cluster executor on {addr} (grpc {grpc_port}) joining scheduler {}:{}",
        config.scheduler_host, config.scheduler_port
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| SluiceError::Usage(format!("executor on {addr} stopped: {e}")))
}
