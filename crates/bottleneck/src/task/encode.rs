//! Feature extraction and dimensionality reduction: the bottleneck codes of any model's
//! inputs (a folder of images or a table), one row per sample, the path or id first.

use std::path::Path;

use burn::prelude::Device;

use crate::data::images::find_images;
use crate::data::table::TableWriter;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::task::model::Model;
use crate::task::table::code_columns;

/// Writes the codes of every sample of `data` under the model file `model` to `out` (CSV,
/// Parquet or `.npy` by extension; `.npy` holds the codes only). Images are named by their
/// path relative to `data`. Returns samples written and skipped (under `skip_bad`).
pub fn encode_to_file(
    model: &Path,
    data: &Path,
    out: &Path,
    skip_bad: bool,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(usize, usize)> {
    let detector = match Model::load(model, device)? {
        Model::TableDetector(table) => return table.encode_file(data, out, skip_bad, progress),
        Model::ImageDetector(detector) => detector,
        other @ (Model::ImageDenoiser(_) | Model::AudioDetector(_) | Model::AudioDenoiser(_)) => {
            return Err(Error::Invalid(format!(
                "{}: {}; encode needs an image or table anomaly detector",
                model.display(),
                other.kind()
            )));
        }
    };
    let paths = find_images(data)?;
    let base = if data.is_file() {
        data.parent().unwrap_or(Path::new("")).to_path_buf()
    } else {
        data.to_path_buf()
    };
    let columns = code_columns(detector.meta().spec.latent);
    let mut written = 0;
    let mut skipped = 0;
    crate::io::write_atomic(out, |tmp| {
        let mut w = TableWriter::create(out, tmp, "path", &columns)?;
        skipped = detector.encode_paths(&paths, skip_bad, progress, |index, code| {
            let rel = paths[index].strip_prefix(&base).unwrap_or(&paths[index]);
            w.write(&[rel.to_string_lossy().into_owned()], code)?;
            written += 1;
            Ok(())
        })?;
        w.finish()
    })?;
    Ok((written, skipped))
}
