//! A source held in memory as Arrow after its first read (`cache = true`, or a small source
//! in the shell and the server), so that repeated queries skip opening and parsing its
//! files. Every scan lists the files again (a stat for a local file) and reads them anew
//! when one changed, appeared or went away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::{collect, ExecutionPlan};
use futures::StreamExt;

/// Copies let go of (read anew or dropped) by any held source since the process started:
/// whoever keeps plans over copies looks again when this moves.
static COPIES_REPLACED: AtomicU64 = AtomicU64::new(0);

/// What a file was when it was read: a change to any of these reads the source again.
type FileStamp = (String, u64, DateTime<Utc>, Option<String>);

#[derive(Debug)]
struct Held {
    files: Vec<FileStamp>,
    table: Arc<MemTable>,
}

#[derive(Debug)]
pub struct CachedTable {
    listing: Arc<ListingTable>,
    /// The source, to name it when its files cannot be read.
    source: super::SourceDef,
    /// Hold the source only while its files add up to at most this; None: whatever the size.
    up_to: Option<u64>,
    held: tokio::sync::Mutex<Option<Held>>,
}

impl CachedTable {
    pub fn new(listing: Arc<ListingTable>, source: super::SourceDef, up_to: Option<u64>) -> Self {
        CachedTable {
            listing,
            source,
            up_to,
            held: tokio::sync::Mutex::new(None),
        }
    }

    async fn files(&self, state: &dyn Session) -> Result<Vec<FileStamp>> {
        let extension = &self.listing.options().file_extension;
        let mut files = Vec::new();
        for url in self.listing.table_paths() {
            // A local file is one stat away; the object store would ask a blocking thread
            // (about 40 times as long, for every query of a small table).
            if let Some(stamp) = local_file_stamp(url) {
                files.push(stamp?);
                continue;
            }
            let store = state.runtime_env().object_store(url)?;
            let mut listed = url.list_all_files(state, store.as_ref(), extension).await?;
            while let Some(meta) = listed.next().await {
                let meta = meta?;
                files.push((
                    meta.location.to_string(),
                    meta.size,
                    meta.last_modified,
                    meta.e_tag,
                ));
            }
        }
        files.sort();
        Ok(files)
    }

    /// How many held copies any source has let go of so far.
    pub fn copies_replaced() -> u64 {
        COPIES_REPLACED.load(Ordering::Relaxed)
    }

    /// Whether `copy` is the one held now, as far as can be told without waiting (a copy
    /// being read anew counts as held until it is replaced).
    pub fn still_holds(&self, copy: &Arc<MemTable>) -> bool {
        match self.held.try_lock() {
            Ok(held) => held.as_ref().is_some_and(|h| Arc::ptr_eq(&h.table, copy)),
            Err(_) => true,
        }
    }

    /// The copy in memory that reads what the files hold now: read again when a file changed,
    /// appeared or went away; None when the files add up to more than is worth holding.
    /// A plan made over one copy is current for as long as this returns the same copy.
    pub async fn held_copy(&self, state: &dyn Session) -> Result<Option<Arc<MemTable>>> {
        let files = self.files(state).await?;
        // One reader at a time: concurrent first queries wait for one read, not do many.
        let mut held = self.held.lock().await;
        if let Some(current) = held.as_ref().filter(|h| h.files == files) {
            return Ok(Some(current.table.clone()));
        }
        let size: u64 = files.iter().map(|f| f.1).sum();
        // Counted once the old copy is gone and the lock free, so that a look finds it gone.
        let replacing = held.is_some();
        if self.up_to.is_some_and(|up_to| size > up_to) {
            // Grown past the size worth holding: read from the files, and let go of the old copy.
            *held = None;
            drop(held);
            if replacing {
                COPIES_REPLACED.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(None);
        }
        let whole = self.listing.scan(state, None, &[], None).await?;
        let batches = collect(whole, state.task_ctx()).await.map_err(|e| {
            self.source
                .error(crate::error::describe_datafusion_error(&e))
        })?;
        let table = Arc::new(MemTable::try_new(self.schema(), vec![batches])?);
        *held = Some(Held {
            files,
            table: table.clone(),
        });
        drop(held);
        if replacing {
            COPIES_REPLACED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(table))
    }
}

fn local_file_stamp(url: &ListingTableUrl) -> Option<Result<FileStamp>> {
    if url.scheme() != "file" || url.is_collection() || url.get_glob().is_some() {
        return None;
    }
    let path = url.get_url().to_file_path().ok()?;
    Some(
        std::fs::metadata(&path)
            .and_then(|m| Ok((m.len(), m.modified()?)))
            .map(|(len, modified)| (url.prefix().to_string(), len, modified.into(), None))
            .map_err(|e| DataFusionError::External(Box::new(e))),
    )
}

#[async_trait]
impl TableProvider for CachedTable {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self.held_copy(state).await? {
            Some(table) => table.scan(state, projection, filters, limit).await,
            None => self.listing.scan(state, projection, filters, limit).await,
        }
    }
}
