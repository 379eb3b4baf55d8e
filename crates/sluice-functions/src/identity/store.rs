//! Byte logs that stay in memory while the pool allows and move to the session's spill
//! directory when it does not: the buckets of identifiers `resolve_identities` partitions
//! its input into, written once and read back whole or record by record.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::{SpillFile, SpillWriter};
use datafusion::physical_plan::metrics::Count;

/// Memory is asked of the pool in steps this large, not per record.
const GROW_STEP: usize = 4 << 20;
/// Write buffer of each bucket once it lives in a file.
const FILE_BUFFER: usize = 64 << 10;

enum Log {
    Memory(Vec<u8>),
    File {
        writer: BufWriter<Box<dyn SpillWriter>>,
        file: Arc<dyn SpillFile>,
    },
}

/// A finished log, readable any number of times.
pub(super) enum Finished {
    Memory(Vec<u8>),
    File(Arc<dyn SpillFile>, u64),
}

impl Finished {
    pub(super) fn len(&self) -> u64 {
        match self {
            Finished::Memory(v) => v.len() as u64,
            Finished::File(_, len) => *len,
        }
    }

    pub(super) fn is_in_memory(&self) -> bool {
        matches!(self, Finished::Memory(_))
    }

    /// The whole log as one buffer: the memory one as is, a file's read into `into`.
    pub(super) fn bytes<'a>(&'a self, into: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        match self {
            Finished::Memory(v) => Ok(v),
            Finished::File(..) => {
                into.clear();
                self.reader()?.read_to_end(into)?;
                Ok(into)
            }
        }
    }

    /// Moves an in-memory log to a file of the disk manager.
    pub(super) fn spill(&mut self, disk: &Arc<DiskManager>, spilled_bytes: &Count) -> Result<()> {
        let Finished::Memory(bytes) = self else {
            return Ok(());
        };
        let (file, mut writer) = spill_file(disk, "a bucket", bytes, spilled_bytes)?;
        writer.flush()?;
        writer.finish()?;
        let len = bytes.len() as u64;
        *self = Finished::File(file, len);
        Ok(())
    }

    /// A reader that owns the log, for a merge that outlives the caller.
    pub(super) fn into_reader(self) -> Result<Box<dyn BufRead + Send>> {
        match self {
            Finished::Memory(v) => Ok(Box::new(std::io::Cursor::new(v))),
            Finished::File(file, _) => {
                let inner = open(file.as_ref())?;
                Ok(Box::new(OwnedFile { inner, _file: file }))
            }
        }
    }

    pub(super) fn reader(&self) -> Result<Box<dyn BufRead + Send + '_>> {
        match self {
            Finished::Memory(v) => Ok(Box::new(v.as_slice())),
            Finished::File(file, _) => Ok(Box::new(open(file.as_ref())?)),
        }
    }
}

fn open(file: &dyn SpillFile) -> Result<BufReader<std::fs::File>> {
    let path = file.path().ok_or_else(|| {
        DataFusionError::NotImplemented("resolve_identities spills to local files only".into())
    })?;
    Ok(BufReader::with_capacity(
        FILE_BUFFER,
        std::fs::File::open(path)?,
    ))
}

/// A spill file's reader that keeps the file from being deleted while it reads.
struct OwnedFile {
    inner: BufReader<std::fs::File>,
    _file: Arc<dyn SpillFile>,
}

impl Read for OwnedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl BufRead for OwnedFile {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt)
    }
}

/// A new spill file holding `bytes`, and its writer for what comes after them.
fn spill_file(
    disk: &Arc<DiskManager>,
    what: &str,
    bytes: &[u8],
    spilled_bytes: &Count,
) -> Result<(Arc<dyn SpillFile>, Box<dyn SpillWriter>)> {
    let file = disk.create_tmp_file(&format!("resolve_identities {what}"))?;
    let mut writer = file.open_writer()?;
    writer.write_all(bytes).map_err(|e| disk_error(what, e))?;
    spilled_bytes.add(bytes.len());
    Ok((file, writer))
}

fn disk_error(what: &str, e: std::io::Error) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "resolve_identities: cannot spill {what} to disk: {e}"
    ))
}

/// `n` logs sharing one spillable reservation: when the pool refuses more memory, every
/// log still in memory is written out and the rest of the writes go to files.
pub(super) struct Logs {
    logs: Vec<Log>,
    reservation: MemoryReservation,
    used: usize,
    disk: Arc<DiskManager>,
    what: &'static str,
    spilled_bytes: Count,
    spill_count: Count,
}

impl Logs {
    pub(super) fn new(
        n: usize,
        reservation: MemoryReservation,
        disk: Arc<DiskManager>,
        what: &'static str,
        (spilled_bytes, spill_count): (Count, Count),
    ) -> Self {
        Logs {
            logs: (0..n).map(|_| Log::Memory(Vec::new())).collect(),
            reservation,
            used: 0,
            disk,
            what,
            spilled_bytes,
            spill_count,
        }
    }

    /// Appends the parts to log `k` as one record.
    pub(super) fn append(&mut self, k: usize, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if let Log::Memory(_) = self.logs[k] {
            if self.used + len > self.reservation.size()
                && self.reservation.try_grow(len.max(GROW_STEP)).is_err()
            {
                self.spill()?;
            }
        }
        match &mut self.logs[k] {
            Log::Memory(buf) => {
                self.used += len;
                for p in parts {
                    buf.extend_from_slice(p);
                }
            }
            Log::File { writer, .. } => {
                let what = self.what;
                for p in parts {
                    writer.write_all(p).map_err(|e| disk_error(what, e))?;
                }
                self.spilled_bytes.add(len);
            }
        }
        Ok(())
    }

    /// Moves every log to a file of the disk manager and gives the memory back.
    fn spill(&mut self) -> Result<()> {
        for i in 0..self.logs.len() {
            let Log::Memory(buf) = &mut self.logs[i] else {
                continue;
            };
            let bytes = std::mem::take(buf);
            let (file, writer) = spill_file(&self.disk, self.what, &bytes, &self.spilled_bytes)?;
            let writer = BufWriter::with_capacity(FILE_BUFFER, writer);
            self.logs[i] = Log::File { writer, file };
        }
        self.spill_count.add(1);
        self.used = 0;
        self.reservation.free();
        Ok(())
    }

    /// The logs, done with writing, and the reservation still holding the in-memory ones.
    pub(super) fn finish(self) -> Result<(Vec<Finished>, MemoryReservation)> {
        let mut out = Vec::with_capacity(self.logs.len());
        for log in self.logs {
            out.push(match log {
                Log::Memory(v) => Finished::Memory(v),
                Log::File { mut writer, file } => {
                    writer.flush()?;
                    let mut inner = writer.into_inner().map_err(|e| e.into_error())?;
                    inner.finish()?;
                    let len = file.size().unwrap_or(0);
                    Finished::File(file, len)
                }
            });
        }
        Ok((out, self.reservation))
    }
}

/// Reads what `Logs::append` wrote: little-endian u32s and length-prefixed byte strings.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        let end = self.pos + 4;
        let b = self.bytes.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed string: its offset and length in the buffer.
    pub(super) fn text(&mut self) -> Result<(usize, usize)> {
        let len = self.u32()? as usize;
        let start = self.pos;
        if start + len > self.bytes.len() {
            return Err(truncated());
        }
        self.pos += len;
        Ok((start, len))
    }
}

pub(super) fn truncated() -> DataFusionError {
    DataFusionError::Internal("resolve_identities: a spilled record is truncated".into())
}

/// One u32 from a reader, or None at the end.
pub(super) fn read_u32(r: &mut dyn BufRead) -> Result<Option<u32>> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some(u32::from_le_bytes(b))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `len` bytes from a reader into `into`.
pub(super) fn read_bytes(r: &mut dyn BufRead, len: usize, into: &mut Vec<u8>) -> Result<()> {
    into.clear();
    into.resize(len, 0);
    r.read_exact(into).map_err(|_| truncated())
}
