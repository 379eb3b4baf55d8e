//! The client side of a sluice cluster (`run --cluster`, `shell --cluster`): the cluster
//! address, the session a client plans with, and the codecs and planner that carry sluice's
//! own tables and operators to the scheduler and executors.

pub mod codec;
pub mod planner;

use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::error::{Result, SluiceError};
use codec::SluiceLogicalCodec;
use planner::ClusterPlanner;

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

/// Whether the queries of a session with this config run on a cluster (it was upgraded for
/// Ballista by [`client_config`]).
pub fn runs_on_cluster(config: &SessionConfig) -> bool {
    config
        .options()
        .extensions
        .get::<ballista_core::config::BallistaConfig>()
        .is_some()
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
