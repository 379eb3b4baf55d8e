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
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
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

/// Replace `location` with the checked `staged` folder. The old output is removed only
/// after the new one is in place.
pub fn publish_dir(staged: &Path, location: &Path) -> Result<()> {
    if let Some(parent) = location.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SluiceError::io(parent, e))?;
    }
    if location.exists() {
        exchange(staged, location).map_err(|e| SluiceError::io(location, e))?;
        // `staged` now holds the previous output.
        std::fs::remove_dir_all(staged).map_err(|e| SluiceError::io(staged, e))?;
    } else {
        std::fs::rename(staged, location).map_err(|e| SluiceError::io(location, e))?;
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
