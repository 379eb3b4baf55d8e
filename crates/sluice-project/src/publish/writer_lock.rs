//! One run at a time writes a Delta table. A run's files go into the table's folder before
//! they are committed, and a run tells its own files apart from the rest only as those new
//! since it began: a second run writing the same table at the same time would check,
//! commit or delete the first one's files. So a run holds `_sluice_writing.json` in the
//! table's folder, created only if absent (a conditional put, on S3 too), from its first
//! write to its commit. A lock whose run was killed on this machine is taken over; one left
//! by a run elsewhere is named, with the key to delete.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::objects::key;
use crate::error::{Result, SluiceError};

const LOCK: &str = "_sluice_writing.json";

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    run: String,
    host: String,
    pid: u32,
    since: String,
}

/// The table's writer lock while this run holds it.
pub(crate) struct WriterLock {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
}

impl WriterLock {
    pub(crate) async fn acquire(
        store: &Arc<dyn ObjectStore>,
        prefix: &ObjectPath,
        location: &str,
        run: &str,
    ) -> Result<WriterLock> {
        let lock_key = key(prefix, LOCK);
        let me = Holder {
            run: run.to_string(),
            host: host_name(),
            pid: std::process::id(),
            since: chrono::Utc::now().to_rfc3339(),
        };
        let body = serde_json::to_vec(&me).map_err(|e| SluiceError::sql(e.to_string()))?;
        let create = PutOptions::from(PutMode::Create);
        for _ in 0..2 {
            match store
                .put_opts(&lock_key, PutPayload::from(body.clone()), create.clone())
                .await
            {
                Ok(_) => {
                    return Ok(WriterLock {
                        store: store.clone(),
                        key: lock_key,
                    })
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let holder = match store.get(&lock_key).await {
                        Ok(got) => got
                            .bytes()
                            .await
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok()),
                        // Released meanwhile: try again.
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(lock_error(location, e)),
                    };
                    match holder {
                        Some(h) if h.host == me.host && !alive(h.pid) => {
                            // Its run was killed: take the lock over.
                            let _ = store.delete(&lock_key).await;
                        }
                        Some(h) => {
                            return Err(SluiceError::publish(location, format!(
                                "run {} (pid {} on {}, since {}) is writing this Delta table; \
                                 one run at a time writes a table. If that run is gone, delete {location}/{LOCK}",
                                h.run, h.pid, h.host, h.since
                            )))
                        }
                        None => {
                            return Err(SluiceError::publish(location, format!(
                                "another run is writing this Delta table ({location}/{LOCK} \
                                 cannot be read); if none is, delete it"
                            )))
                        }
                    }
                }
                Err(e) => return Err(lock_error(location, e)),
            }
        }
        Err(SluiceError::publish(
            location,
            format!("could not take the writer lock {location}/{LOCK}"),
        ))
    }

    pub(crate) async fn release(self) {
        let _ = self.store.delete(&self.key).await;
    }
}

fn lock_error(location: &str, e: object_store::Error) -> SluiceError {
    SluiceError::store(&format!("{location}/{LOCK}"), &e)
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
