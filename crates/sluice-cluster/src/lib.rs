//! The nodes of a sluice cluster on Apache Ballista: `sluice cluster scheduler` and
//! `sluice cluster executor` (the client side is `cluster_client`). Every role builds its session
//! with `session::build_session` from the same project, so the executors have sluice's
//! functions, object stores and memory limit; the codecs carry sluice's own tables and
//! operators between them.

// The crates below, under the names the modules use.
use sluice_core::{config, error};
use sluice_session as session;
use sluice_session::cluster_client;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::cluster_client::codec::{SluiceLogicalCodec, SluicePhysicalCodec};
use crate::cluster_client::parse_cluster_url;
use crate::config::Project;
use crate::error::{Result, SluiceError};
use crate::session::{build_session, SessionOptions};

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
        memory_pool_size: options
            .memory_limit
            .map(|m| session::memory_pool_size(m) as u64),
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
