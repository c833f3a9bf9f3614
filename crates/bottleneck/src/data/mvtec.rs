//! The MVTec AD layout users bring: `ROOT/train/good`, `ROOT/test/<good|defect>`,
//! `ROOT/ground_truth/<defect>/<name>_mask.png`.

use std::path::{Path, PathBuf};

use crate::data::images::find_images;
use crate::error::{Error, Result};

/// One test image with its label.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub path: PathBuf,
    /// `good` or the defect folder's name.
    pub category: String,
    /// True for anything outside `test/good`.
    pub anomalous: bool,
    /// Ground-truth mask, when the layout has one for this image.
    pub mask: Option<PathBuf>,
}

/// The labelled test images under `root/test`, sorted by category then name.
pub fn test_images(root: &Path) -> Result<Vec<TestImage>> {
    let test = root.join("test");
    if !test.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not an MVTec-layout root (expected a folder test/ with test/good and test/<defect>)",
            root.display()
        )));
    }
    let mut categories: Vec<PathBuf> = std::fs::read_dir(&test)
        .map_err(|e| Error::io(&test, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    categories.sort();
    let mut out = Vec::new();
    for dir in categories {
        let category = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let anomalous = category != "good";
        let images = match find_images(&dir) {
            Ok(v) => v,
            Err(Error::NoImages { .. }) => continue,
            Err(e) => return Err(e),
        };
        for path in images {
            let mask = if anomalous {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let m = root
                    .join("ground_truth")
                    .join(&category)
                    .join(format!("{stem}_mask.png"));
                m.is_file().then_some(m)
            } else {
                None
            };
            out.push(TestImage {
                path,
                category: category.clone(),
                anomalous,
                mask,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::NoImages { path: test });
    }
    Ok(out)
}
