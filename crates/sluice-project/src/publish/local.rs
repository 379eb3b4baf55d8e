//! Write-audit-publish on a local filesystem: outputs are written to a staging folder, checked
//! there, and then swapped with the published folder in one atomic rename, so readers see
//! either the old complete output or the new complete output, never a mix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SluiceError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub bytes: u64,
}

/// Data files under a folder (relative paths, sorted), skipping sluice's own markers.
pub fn data_files(dir: &Path) -> Result<Vec<OutputFile>> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<OutputFile>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| SluiceError::io(dir, e))? {
        let entry = entry.map_err(|e| SluiceError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if !name.starts_with('_') && !name.starts_with('.') {
            let bytes = entry
                .metadata()
                .map_err(|e| SluiceError::io(&path, e))?
                .len();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push(OutputFile { path: rel, bytes });
        }
    }
    Ok(())
}

/// Write a file and flush it to disk before it counts as written.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| SluiceError::io(path, e))?;
    f.write_all(bytes).map_err(|e| SluiceError::io(path, e))?;
    f.sync_all().map_err(|e| SluiceError::io(path, e))
}

/// Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let cb = CString::new(b.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: both are valid NUL-terminated paths; the syscall only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How a publish put a folder in place, and where the output it displaced now is.
#[derive(Debug)]
pub struct LocalPublish {
    location: PathBuf,
    /// The previous output, kept until `finish` (or put back by `undo`).
    previous: Option<PathBuf>,
}

impl LocalPublish {
    /// The publish stands: remove the previous output.
    pub fn finish(self) -> Result<()> {
        match &self.previous {
            Some(p) => remove_dir(p),
            None => Ok(()),
        }
    }

    /// Put the previous output back (or remove the new one when there was none), with the
    /// same crash-safe swap the publish used.
    pub fn undo(self) -> Result<()> {
        match self.previous {
            Some(previous) => {
                let displaced = swap_in(&previous, &self.location)?;
                match displaced {
                    Some(new) => remove_dir(&new),
                    None => Ok(()),
                }
            }
            None => {
                // A first publish by the pointer protocol: the link and its version go.
                if let Ok(target) = std::fs::read_link(&self.location) {
                    std::fs::remove_file(&self.location)
                        .map_err(|e| SluiceError::io(&self.location, e))?;
                    return remove_dir(&self.location.with_file_name(target));
                }
                remove_dir(&self.location)
            }
        }
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SluiceError::io(dir, e)),
        _ => Ok(()),
    }
}

/// Replace `location` with the checked `staged` folder. The previous output stays aside
/// until the returned publish is finished or undone.
pub fn publish_dir(staged: &Path, location: &Path) -> Result<LocalPublish> {
    if let Some(parent) = location.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SluiceError::io(parent, e))?;
    }
    recover(location)?;
    let previous = swap_in(staged, location)?;
    Ok(LocalPublish {
        location: location.to_path_buf(),
        previous,
    })
}

/// `SLUICE_PUBLISH=pointer` uses the fallback protocol even where the exchange works (to
/// test it, or on a filesystem that claims an exchange it does not make atomic).
fn exchange_wanted() -> bool {
    std::env::var("SLUICE_PUBLISH").map_or(true, |v| v != "pointer")
}

/// Put `from` at `location`; returns where the output that was there now is. One atomic
/// exchange where the filesystem offers it; else the pointer protocol.
fn swap_in(from: &Path, location: &Path) -> Result<Option<PathBuf>> {
    let is_link = std::fs::symlink_metadata(location)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if !location.exists() && !is_link {
        if !exchange_wanted() {
            return point_to(from, location);
        }
        return match std::fs::rename(from, location) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let near = sibling(location, "sluice-new");
                copy_dir(from, &near)?;
                remove_dir(from)?;
                swap_in(&near, location)
            }
            other => {
                other.map_err(|e| SluiceError::io(location, e))?;
                sync_parent(location)?;
                Ok(None)
            }
        };
    }
    if exchange_wanted() {
        match exchange(from, location) {
            Ok(()) => {
                sync_parent(location)?;
                // `from` now holds the previous output.
                return Ok(Some(from.to_path_buf()));
            }
            // The staging folder is on another filesystem: bring it next to the output.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let near = sibling(location, "sluice-new");
                copy_dir(from, &near)?;
                remove_dir(from)?;
                return swap_in(&near, location);
            }
            Err(e) if !exchange_unsupported(&e) => return Err(SluiceError::io(location, e)),
            Err(_) => {}
        }
    }
    if is_link {
        point_to(from, location)
    } else {
        move_aside_then_point(from, location)
    }
}

/// The errors of a filesystem without `RENAME_EXCHANGE` (NFS, some FUSE and overlay ones).
fn exchange_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

fn file_name(location: &Path) -> String {
    location
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A fresh hidden name next to `location` (`.name.sluice-old-<ns>`).
fn sibling(location: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    location.with_file_name(format!(".{}.{what}-{nanos}", file_name(location)))
}

/// The pointer protocol, for filesystems without `RENAME_EXCHANGE`: the published location
/// is a symbolic link to a version folder beside it (`.name.sluice-v-<ns>`). A publish
/// renames the checked folder to a new version, makes a new link and renames it over the
/// old one; a rename is atomic on NFS too, so readers find the old version or the new one,
/// and a run killed at any moment leaves one of them published. Returns the version the
/// link pointed to before.
fn point_to(from: &Path, location: &Path) -> Result<Option<PathBuf>> {
    let previous = std::fs::read_link(location)
        .ok()
        .map(|target| location.with_file_name(target));
    let version = sibling(location, "sluice-v");
    std::fs::rename(from, &version).map_err(|e| SluiceError::io(&version, e))?;
    sync_parent(location)?;
    test_pause();
    let link = sibling(location, "sluice-link");
    let target = version.file_name().unwrap_or_default();
    std::os::unix::fs::symlink(target, &link).map_err(|e| SluiceError::io(&link, e))?;
    test_pause();
    std::fs::rename(&link, location).map_err(|e| SluiceError::io(location, e))?;
    sync_parent(location)?;
    test_pause();
    Ok(previous)
}

/// The journal of a move from a plain published folder to the pointer protocol:
/// `.name.sluice-publish.json` beside the output.
fn journal_path(location: &Path) -> PathBuf {
    location.with_file_name(format!(".{}.sluice-publish.json", file_name(location)))
}

#[derive(Serialize, Deserialize)]
struct Journal {
    /// Where the published folder is moved while the link takes its place.
    aside: PathBuf,
}

/// The first pointer publish over a plain folder: record the intent, move the folder aside,
/// put the link in place, drop the record. Readers find no output between the two renames
/// (once per output); a run killed there leaves the journal, and `recover` puts the folder
/// back.
fn move_aside_then_point(from: &Path, location: &Path) -> Result<Option<PathBuf>> {
    let journal = journal_path(location);
    let aside = sibling(location, "sluice-v");
    let record = serde_json::to_vec(&Journal {
        aside: aside.clone(),
    })
    .map_err(|e| SluiceError::sql(e.to_string()))?;
    let tmp = journal.with_extension("json.tmp");
    write_durably(&tmp, &record)?;
    std::fs::rename(&tmp, &journal).map_err(|e| SluiceError::io(&journal, e))?;
    sync_parent(location)?;
    test_pause();
    std::fs::rename(location, &aside).map_err(|e| SluiceError::io(location, e))?;
    sync_parent(location)?;
    test_pause();
    if let Err(e) = point_to(from, location) {
        // Put the published output back before saying so.
        recover(location)?;
        return Err(e);
    }
    std::fs::remove_file(&journal).map_err(|e| SluiceError::io(&journal, e))?;
    sync_parent(location)?;
    Ok(Some(aside))
}

/// `SLUICE_TEST_PUBLISH_PAUSE_MS`: a pause between the steps of the fallback protocol, so
/// the kill test can land between any two of them. Only in debug builds (the test
/// profile): a shipped binary has no such hook.
#[cfg(not(debug_assertions))]
fn test_pause() {}

#[cfg(debug_assertions)]
fn test_pause() {
    if let Some(ms) = std::env::var("SLUICE_TEST_PUBLISH_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Finish or roll back what an interrupted publish left at `location`: a journal whose
/// folder was moved aside and no link in its place puts the folder back; versions no link
/// points to, and copies, are removed.
pub fn recover(location: &Path) -> Result<bool> {
    let journal = journal_path(location);
    let mut recovered = false;
    match std::fs::read(&journal) {
        Ok(bytes) => {
            let record: Journal = serde_json::from_slice(&bytes).map_err(|e| {
                SluiceError::sql(format!(
                    "{}: not a publish journal ({e}); check {} and remove the journal",
                    journal.display(),
                    location.display()
                ))
            })?;
            if !location.exists() && record.aside.exists() {
                std::fs::rename(&record.aside, location)
                    .map_err(|e| SluiceError::io(location, e))?;
                sync_parent(location)?;
            }
            std::fs::remove_file(&journal).map_err(|e| SluiceError::io(&journal, e))?;
            sync_parent(location)?;
            recovered = true;
        }
        // No journal, or no folder to hold one (the output's folder is missing or a file).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) => {}
        Err(e) => return Err(SluiceError::io(&journal, e)),
    }
    let Some(parent) = location.parent() else {
        return Ok(recovered);
    };
    // Versions no link points to, links and copies never renamed into place.
    let current = std::fs::read_link(location).ok();
    let name = file_name(location);
    let leftovers = [
        format!(".{name}.sluice-v-"),
        format!(".{name}.sluice-link-"),
        format!(".{name}.sluice-new-"),
    ];
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            let file = entry.file_name();
            let text = file.to_string_lossy();
            let in_use = current.as_deref() == Some(Path::new(&file));
            if !in_use && leftovers.iter().any(|l| text.starts_with(l.as_str())) {
                let path = entry.path();
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir {
                    remove_dir(&path)?;
                } else {
                    std::fs::remove_file(&path).map_err(|e| SluiceError::io(&path, e))?;
                }
                recovered = true;
            }
        }
    }
    Ok(recovered)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| SluiceError::io(parent, e))
}

/// A copy of a folder (for a staging folder on another filesystem than the output).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| SluiceError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| SluiceError::io(from, e))? {
        let entry = entry.map_err(|e| SluiceError::io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| SluiceError::io(&src, e))?;
            std::fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(|e| SluiceError::io(&dst, e))?;
        }
    }
    Ok(())
}

/// The staging folder of a model in a run; siblings of earlier runs are leftovers.
pub fn staging_dir(target: &Path, model: &str, run_id: &str) -> PathBuf {
    target.join(".staging").join(format!("{model}-{run_id}"))
}

/// Remove what a killed run left in staging (never touches published outputs).
pub fn clean_staging(target: &Path) -> Result<usize> {
    let dir = target.join(".staging");
    if !dir.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| SluiceError::io(&dir, e))? {
        let path = entry.map_err(|e| SluiceError::io(&dir, e))?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| SluiceError::io(&path, e))?;
        n += 1;
    }
    Ok(n)
}

/// Carry the published data files of an incremental model into its staging folder by hard
/// link (a copy across filesystems), so the new output is the old files plus the new rows.
pub fn link_files(from: &Path, to: &Path, files: &[OutputFile]) -> Result<()> {
    for f in files {
        let (src, dst) = (from.join(&f.path), to.join(&f.path));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| SluiceError::io(parent, e))?;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| SluiceError::io(&src, e))?;
        }
    }
    Ok(())
}
