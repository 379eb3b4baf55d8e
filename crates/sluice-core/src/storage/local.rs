//! Local files, with large outputs written past the page cache.
//!
//! Outputs are written once and published, not read back soon, yet buffered writes copy
//! every byte into freshly allocated page-cache pages. On the 2-core benchmark VM a fresh
//! page costs about 2 s per GB (the hypervisor backs it on first touch): writing the 1.8 GB
//! output of benches/pipeline at 10M rows spent a fifth of the run's CPU in that copy
//! (perf: `copy_folio_from_iter_atomic`), while `dd oflag=direct` writes 2 GB with 0.2 s
//! of CPU. And a published output should be on disk before its manifest says so, which
//! costs a full flush of buffered data but next to nothing after direct writes.
//!
//! [`LocalStore`] is object_store's `LocalFileSystem` (reads, listings, small puts) except
//! for multipart uploads, the path of every file DataFusion writes past its 10 MiB buffer:
//! those go through [`DirectUpload`], which writes aligned blocks with `O_DIRECT`, then
//! syncs and renames the staged file into place as `LocalFileSystem` does. A filesystem
//! without direct I/O (tmpfs before Linux 6.6, some network mounts) gets ordinary
//! buffered writes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::FutureExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// Direct I/O needs buffers, offsets and lengths aligned to the device's logical block;
/// 4 KiB covers the devices Linux serves today.
const ALIGN: usize = 4096;

/// Bytes gathered before one direct write: large enough that the device sees big
/// sequential writes, small enough to stay in the allocator's reused heap.
const BLOCK: usize = 8 << 20;

const STORE: &str = "LocalFileSystem";

#[derive(Debug, Default)]
pub struct LocalStore {
    inner: LocalFileSystem,
}

impl LocalStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore (direct writes)")
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            // LocalFileSystem's own answer (not implemented) for what files cannot carry.
            return self.inner.put_multipart_opts(location, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        let upload = tokio::task::spawn_blocking(move || DirectUpload::create(dest))
            .await
            .map_err(generic)??;
        Ok(Box::new(upload))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(source),
    }
}

/// An I/O error that names the file it happened on.
fn io_error(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    generic(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// A buffer whose data starts on an [`ALIGN`] boundary, as direct I/O requires.
struct AlignedBlock {
    bytes: Vec<u8>,
    /// Where the aligned data starts in `bytes`.
    start: usize,
}

impl fmt::Debug for AlignedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBlock({} bytes)", self.len())
    }
}

impl AlignedBlock {
    fn new() -> Self {
        let mut bytes: Vec<u8> = Vec::with_capacity(BLOCK + ALIGN);
        let start = bytes.as_ptr().align_offset(ALIGN);
        bytes.resize(start, 0);
        AlignedBlock { bytes, start }
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Append as much of `data` as fits; returns how much did.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = (BLOCK - self.len()).min(data.len());
        self.bytes.extend_from_slice(&data[..n]);
        n
    }

    fn is_full(&self) -> bool {
        self.len() == BLOCK
    }

    /// Zeros up to the next block boundary, for the last write; the file is cut back to
    /// its real length afterwards.
    fn pad(&mut self) {
        let padded = self.len().div_ceil(ALIGN) * ALIGN;
        self.bytes.resize(self.start + padded, 0);
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// The staged file of one upload, shared by its in-flight writes.
#[derive(Debug)]
struct Staged {
    file: File,
    path: PathBuf,
}

impl Staged {
    /// Write a whole block at `offset`. If the filesystem refuses direct I/O for it
    /// (EINVAL), the file falls back to buffered writes.
    fn write_block(&self, block: &AlignedBlock, offset: u64) -> Result<()> {
        match self.file.write_all_at(block.data(), offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.buffered().map_err(|e| io_error(&self.path, e))?;
                self.file.write_all_at(block.data(), offset)
            }
            other => other,
        }
        .map_err(|e| io_error(&self.path, e))
    }

    fn buffered(&self) -> std::io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this struct owns; only the status flags change.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// One file written in [`BLOCK`]s with direct I/O to `dest#N`, renamed to `dest` when
/// complete (LocalFileSystem's staging convention, which its listings skip).
#[derive(Debug)]
pub struct DirectUpload {
    staged: Arc<Staged>,
    dest: PathBuf,
    block: Option<AlignedBlock>,
    /// Bytes handed to writes so far: always a whole number of blocks.
    offset: u64,
    finished: bool,
}

impl DirectUpload {
    fn create(dest: PathBuf) -> Result<Self> {
        let (file, path) = open_staged(&dest)?;
        Ok(DirectUpload {
            staged: Arc::new(Staged { file, path }),
            dest,
            block: Some(AlignedBlock::new()),
            offset: 0,
            finished: false,
        })
    }

    /// Start writing the current block at the next offset.
    fn write_current(&mut self) -> tokio::task::JoinHandle<Result<()>> {
        let block = self
            .block
            .replace(AlignedBlock::new())
            .unwrap_or_else(AlignedBlock::new);
        let offset = self.offset;
        self.offset += block.len() as u64;
        let staged = Arc::clone(&self.staged);
        tokio::task::spawn_blocking(move || staged.write_block(&block, offset))
    }
}

/// Create `dest#N` for the first free N, with direct I/O where the filesystem has it.
fn open_staged(dest: &std::path::Path) -> Result<(File, PathBuf)> {
    let mut direct = true;
    let mut n = 1u32;
    loop {
        let mut path = dest.as_os_str().to_owned();
        path.push(format!("#{n}"));
        let path = PathBuf::from(path);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        match options.open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && direct => direct = false,
            Err(e) if e.kind() == ErrorKind::NotFound => match dest.parent() {
                Some(parent) if !parent.exists() => {
                    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?
                }
                _ => return Err(io_error(&path, e)),
            },
            Err(e) => return Err(io_error(&path, e)),
        }
    }
}

#[async_trait]
impl MultipartUpload for DirectUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let mut writes = Vec::new();
        for chunk in data.iter() {
            let mut rest: &[u8] = chunk;
            while !rest.is_empty() {
                let block = self.block.get_or_insert_with(AlignedBlock::new);
                rest = &rest[block.fill(rest)..];
                if block.is_full() {
                    writes.push(self.write_current());
                }
            }
        }
        async move {
            for write in writes {
                write.await.map_err(generic)??;
            }
            Ok(())
        }
        .boxed()
    }

    /// Parts must all have finished (the MultipartUpload contract; DataFusion's writer
    /// awaits them): the tail block is written last, then the file is cut to length,
    /// synced and renamed into place.
    async fn complete(&mut self) -> Result<PutResult> {
        let mut tail = self.block.take().unwrap_or_else(AlignedBlock::new);
        let len = self.offset + tail.len() as u64;
        let offset = self.offset;
        let staged = Arc::clone(&self.staged);
        let dest = self.dest.clone();
        let result = tokio::task::spawn_blocking(move || {
            if tail.len() > 0 {
                tail.pad();
                staged.write_block(&tail, offset)?;
            }
            let file = &staged.file;
            file.set_len(len).map_err(|e| io_error(&staged.path, e))?;
            file.sync_data().map_err(|e| io_error(&staged.path, e))?;
            std::fs::rename(&staged.path, &dest).map_err(|e| io_error(&dest, e))?;
            let meta = file.metadata().map_err(|e| io_error(&dest, e))?;
            Ok(PutResult {
                // LocalFileSystem's e-tag: inode, modification time and size.
                e_tag: Some(format!(
                    "{:x}-{:x}-{:x}",
                    meta.ino(),
                    meta.mtime() as u64 * 1_000_000 + meta.mtime_nsec() as u64 / 1000,
                    meta.size()
                )),
                version: None,
            })
        })
        .await
        .map_err(generic)?;
        self.finished = result.is_ok();
        result
    }

    async fn abort(&mut self) -> Result<()> {
        self.finished = true;
        let path = self.staged.path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(&path).map_err(|e| io_error(&path, e))
        })
        .await
        .map_err(generic)?
    }
}

impl Drop for DirectUpload {
    /// An upload dropped unfinished (a failed or cancelled write) leaves no staged file.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.staged.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// Bytes that differ from block to block, so a block written at the wrong offset shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4093) as u8).collect()
    }

    fn location(path: &std::path::Path) -> Path {
        Path::from_absolute_path(path).unwrap()
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Parts of odd sizes across block boundaries, a length that is no multiple of the
    /// alignment, a folder that does not exist yet: the file holds exactly what was put.
    async fn round_trip(root: &std::path::Path) {
        let data = pattern(2 * BLOCK + 12_345);
        let path = root.join("new/folder/out.parquet");
        let store = LocalStore::new();
        let mut upload = store.put_multipart(&location(&path)).await.unwrap();
        for part in [
            &data[..3_000_001],
            &data[3_000_001..BLOCK + 7],
            &data[BLOCK + 7..],
        ] {
            upload
                .put_part(PutPayload::from(part.to_vec()))
                .await
                .unwrap();
        }
        upload.complete().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(names(&root.join("new/folder")), ["out.parquet"]);
        // Reads go through the same store.
        let read = store
            .get(&location(&path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(read.len(), data.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_writes_land_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(dir.path()).await;
    }

    /// tmpfs: direct I/O since Linux 6.6, the buffered fallback before; the same bytes
    /// either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_writes_on_tmpfs() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        round_trip(dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_and_empty_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new();
        for (name, len) in [
            ("empty", 0),
            ("one", 1),
            ("block", ALIGN),
            ("odd", ALIGN + 1),
        ] {
            let path = dir.path().join(name);
            let mut upload = store.put_multipart(&location(&path)).await.unwrap();
            if len > 0 {
                upload
                    .put_part(PutPayload::from(pattern(len)))
                    .await
                    .unwrap();
            }
            upload.complete().await.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), pattern(len), "{name}");
        }
        assert_eq!(names(dir.path()), ["block", "empty", "odd", "one"]);
    }

    /// An aborted or abandoned upload leaves neither the file nor its staged part.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aborted_and_dropped_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new();
        let mut aborted = store
            .put_multipart(&location(&dir.path().join("a")))
            .await
            .unwrap();
        aborted
            .put_part(PutPayload::from(pattern(BLOCK + 1)))
            .await
            .unwrap();
        aborted.abort().await.unwrap();
        let mut dropped = store
            .put_multipart(&location(&dir.path().join("b")))
            .await
            .unwrap();
        dropped
            .put_part(PutPayload::from(pattern(10)))
            .await
            .unwrap();
        drop(dropped);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
