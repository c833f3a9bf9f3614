//! Writing outputs so that an interrupted run never leaves a half-written file: everything
//! goes to a temporary sibling first and is renamed into place once complete.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary sibling used while `path` is being written.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Calls `write` with a temporary path next to `path`, then renames it onto `path`. The
/// temporary file is removed when `write` fails. The parent folder is created if needed.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_sibling(path);
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("bn-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.csv");
        write_bytes_atomic(&target, b"old").unwrap();
        let r = write_atomic(&target, |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            Err(Error::Invalid("interrupted".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
