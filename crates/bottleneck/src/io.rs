//! Writing outputs so that an interrupted run never leaves a half-written file: everything
//! goes to a temporary sibling first and is renamed into place once complete.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Temporary files being written now, so that a signal handler can remove them
/// ([`remove_temporaries`]) before the process ends.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The temporary sibling used while `path` is being written: `.NAME.PID.tmp`.
fn temp_sibling(path: &Path) -> PathBuf {
    path.with_file_name(format!(".{}.{}.tmp", file_name(path), std::process::id()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into())
}

/// Removes the temporary siblings of `path` left by writers that are gone (killed,
/// crashed): `.NAME.PID.tmp` whose process no longer runs. Only where the running
/// processes can be listed (`/proc`); elsewhere nothing is removed.
fn remove_stale_siblings(path: &Path) {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return;
    }
    let prefix = format!(".{}.", file_name(path));
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the temporary files being written now. For a signal handler: the process is
/// about to end, and its half-written outputs must not stay behind.
pub fn remove_temporaries() {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for tmp in live.iter() {
        let _ = std::fs::remove_file(tmp);
    }
}

/// Removes its temporary file when dropped (on an error or a panic) unless the write
/// completed, and keeps it listed in [`LIVE`] meanwhile.
struct TempGuard(PathBuf);

impl TempGuard {
    fn new(tmp: PathBuf) -> Self {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tmp.clone());
        Self(tmp)
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.0);
    }
}

/// Calls `write` with a temporary path next to `path`, then renames it onto `path`. The
/// temporary file is removed when `write` fails or panics (and by
/// [`remove_temporaries`] on a signal); stale ones of earlier runs that were killed are
/// removed first. The parent folder is created if needed.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    remove_stale_siblings(path);
    let guard = TempGuard::new(temp_sibling(path));
    write(&guard.0)?;
    // After the rename the guard's removal finds nothing to remove.
    std::fs::rename(&guard.0, path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Something a command writes: one file, or files in a folder.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    File(&'a Path),
    Folder(&'a Path),
}

/// `path` made absolute with links resolved as far as it exists (a file not written yet
/// is named inside its resolved folder).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => resolved(parent).join(name),
        _ => absolute,
    }
}

/// Whether a command reading a folder would read `path` as data (an image, a table, a
/// recording); a model file kept beside the data is not.
fn is_data_file(path: &Path) -> bool {
    crate::data::images::is_image_file(path)
        || crate::data::table::is_table_path(path)
        || crate::data::audio::is_audio_file(path)
}

/// Fails, naming both, when an output would write over one of the command's inputs: the
/// same file (also through a link or another spelling of the path), a data file already
/// inside an input folder, or an output folder that overlaps an input folder (its files would
/// replace or mix with the inputs). Two outputs at one path are refused too. Inputs that
/// do not exist are left to the command to report.
pub fn refuse_overwrite(inputs: &[&Path], outputs: &[Output<'_>]) -> Result<()> {
    let refuse = |out: &Path, why: String| {
        Err(Error::Invalid(format!(
            "{}: {why}; choose another output",
            out.display()
        )))
    };
    let inputs: Vec<(&Path, PathBuf)> = inputs
        .iter()
        .filter(|p| p.exists())
        .map(|p| (*p, resolved(p)))
        .collect();
    let mut seen: Vec<PathBuf> = Vec::new();
    for out in outputs {
        let (path, folder) = match *out {
            Output::File(p) => (p, false),
            Output::Folder(p) => (p, true),
        };
        let at = resolved(path);
        if seen.contains(&at) {
            return refuse(path, "two outputs would be written at this path".into());
        }
        seen.push(at.clone());
        for (given, input) in &inputs {
            let input_is_dir = input.is_dir();
            let clash = match (folder, input_is_dir) {
                (false, false) => at == *input,
                (false, true) => at.starts_with(input) && at.is_file() && is_data_file(&at),
                (true, false) => input.starts_with(&at),
                (true, true) => at.starts_with(input) || input.starts_with(&at),
            };
            if clash {
                let what = match (folder, input_is_dir) {
                    (false, false) => "this output would write over the input".to_string(),
                    (false, true) => {
                        "this output would write over a file in the input folder".to_string()
                    }
                    _ => "this output folder overlaps the input".to_string(),
                };
                return refuse(path, format!("{what} {}", given.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_go_on_panic_and_stale_ones_of_dead_writers_are_cleaned() {
        let dir = std::env::temp_dir().join(format!("bn-io-temps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("scores.csv");
        // A writer that panics leaves nothing behind.
        let r = std::panic::catch_unwind(|| {
            let _ = write_atomic(&target, |tmp| {
                std::fs::write(tmp, b"half").unwrap();
                panic!("killed mid-write");
            });
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // Left by a killed run (no such process) and by a running one (pid 1).
        let dead = dir.join(".scores.csv.4000000000.tmp");
        let live = dir.join(".scores.csv.1.tmp");
        let other = dir.join(".other.csv.4000000000.tmp");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        write_bytes_atomic(&target, b"done").unwrap();
        assert!(!dead.exists(), "stale temporary of this target removed");
        assert!(live.exists() && other.exists(), "others kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_may_not_write_over_inputs_however_the_path_is_spelt() {
        let dir = std::env::temp_dir().join(format!("bn-io-clobber-{}", std::process::id()));
        let data = dir.join("good");
        std::fs::create_dir_all(&data).unwrap();
        let image = data.join("g00.png");
        let model = dir.join("m.safetensors");
        std::fs::write(&image, b"png").unwrap();
        std::fs::write(&model, b"model").unwrap();
        let err = |inputs: &[&Path], outputs: &[Output<'_>]| {
            refuse_overwrite(inputs, outputs).unwrap_err().to_string()
        };
        // The model given as the output of scoring, also spelt through `..`.
        let spelt = data.join("..").join("m.safetensors");
        let e = err(&[&model, &data], &[Output::File(&spelt)]);
        assert!(
            e.contains("would write over the input") && e.contains("m.safetensors"),
            "{e}"
        );
        // A training image as the model's path; a new file in the folder is fine.
        let e = err(&[&data], &[Output::File(&image)]);
        assert!(e.contains("a file in the input folder"), "{e}");
        refuse_overwrite(&[&data], &[Output::File(&data.join("new.safetensors"))]).unwrap();
        // A model kept beside the data may be written again.
        std::fs::write(data.join("old.safetensors"), b"model").unwrap();
        refuse_overwrite(&[&data], &[Output::File(&data.join("old.safetensors"))]).unwrap();
        // Heatmaps into the data folder or above it; beside it is fine.
        assert!(err(&[&data], &[Output::Folder(&data.join("maps"))]).contains("overlaps"));
        assert!(err(&[&image], &[Output::Folder(&data)]).contains("overlaps"));
        refuse_overwrite(&[&data], &[Output::Folder(&dir.join("maps"))]).unwrap();
        // Two outputs at one path; a link to an input.
        let out = dir.join("out.csv");
        let e = err(&[&data], &[Output::File(&out), Output::File(&out)]);
        assert!(e.contains("two outputs"), "{e}");
        #[cfg(unix)]
        {
            let link = dir.join("link.safetensors");
            std::os::unix::fs::symlink(&model, &link).unwrap();
            assert!(err(&[&model], &[Output::File(&link)]).contains("write over"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
