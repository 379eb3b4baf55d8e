//! One admission path for every listener (Postgres, HTTP, Flight SQL): a statement waits for
//! a turn under `--max-concurrent-queries`, its `--statement-timeout` starts once admitted,
//! and each statement is counted and logged once, the same way whatever the protocol.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::Metrics;

pub struct Admission {
    /// At most this many statements run at once, across listeners; others wait.
    gate: Arc<Semaphore>,
    timeout: Option<Duration>,
    metrics: Arc<Metrics>,
}

/// A statement's turn: held until its last row is sent.
#[derive(Clone)]
pub struct Admitted {
    pub permit: Arc<OwnedSemaphorePermit>,
    /// When the statement must be done, and the limit that set it.
    pub deadline: Option<(tokio::time::Instant, Duration)>,
    /// When the statement asked for its turn (the logged duration counts the wait).
    pub queued: Instant,
}

/// Why a statement did not get to run, or was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    ShuttingDown,
    TimedOut(Duration),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::ShuttingDown => write!(f, "the server is shutting down"),
            Stopped::TimedOut(limit) => write!(
                f,
                "canceling statement due to statement timeout ({} s)",
                limit.as_secs_f64()
            ),
        }
    }
}

impl From<Stopped> for datafusion::error::DataFusionError {
    fn from(why: Stopped) -> Self {
        datafusion::error::DataFusionError::Execution(why.to_string())
    }
}

impl Admission {
    pub fn new(gate: Arc<Semaphore>, timeout: Option<Duration>, metrics: Arc<Metrics>) -> Self {
        Admission {
            gate,
            timeout,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Wait for a turn; the deadline starts once admitted.
    pub async fn admit(&self) -> Result<Admitted, Stopped> {
        let queued = Instant::now();
        let permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Stopped::ShuttingDown)?;
        let deadline = self
            .timeout
            .map(|limit| (tokio::time::Instant::now() + limit, limit));
        Ok(Admitted {
            permit: Arc::new(permit),
            deadline,
            queued,
        })
    }

    /// Count and log one statement (no SQL text, no parameters: they may carry personal data).
    /// `measured` names what the time covers: `planned_ms` when logged before the rows
    /// stream (Postgres), `duration_ms` when logged after the last row.
    pub fn record(
        &self,
        user: &str,
        protocol: &str,
        measured: &str,
        queued: Instant,
        error: Option<&str>,
    ) {
        let elapsed = queued.elapsed();
        self.metrics.query_done(elapsed, error.is_some());
        let status = match error {
            None => "status=ok".to_string(),
            Some(e) => format!("status=error error={e:?}"),
        };
        super::log(&format!(
            "query user={user} protocol={protocol} {measured}={} {status}",
            elapsed.as_millis()
        ));
    }
}

impl Admitted {
    /// Run `work` within the statement's deadline.
    pub async fn within<T, E: From<Stopped>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match self.deadline {
            Some((at, limit)) => tokio::time::timeout_at(at, work)
                .await
                .unwrap_or_else(|_| Err(Stopped::TimedOut(limit).into())),
            None => work.await,
        }
    }

    /// The instant the deadline falls, or far in the future without one.
    pub fn deadline_instant(&self) -> tokio::time::Instant {
        self.deadline.map(|(at, _)| at).unwrap_or_else(|| {
            tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400)
        })
    }
}
