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

/// Fails, naming both, when an output would write over one of the command's inputs: the
/// same file (also through a link or another spelling of the path), a file already inside
/// an input folder, or an output folder that overlaps an input folder (its files would
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
                (false, true) => at.starts_with(input) && at.exists(),
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
