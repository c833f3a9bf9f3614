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

/// The folder of normal test images; every other category folder holds anomalies.
pub const GOOD: &str = "good";

/// Whether `dir` is laid out like an MVTec test folder: a `good/` subfolder, beside which
/// every other subfolder is a defect category.
pub fn is_test_folder(dir: &Path) -> bool {
    dir.join(GOOD).is_dir()
}

/// The label of the image at `path` in the MVTec test folder `test` (see
/// [`is_test_folder`]) by the rule of [`test_images`]: `Some(false)` in `good/`,
/// `Some(true)` in any other category folder, `None` when `path` is not inside a category
/// folder of `test`.
pub fn label_in_test_folder(test: &Path, path: &Path) -> Option<bool> {
    Some(category_in_test_folder(test, path)? != GOOD)
}

/// The category folder of `test` that `path` lies in (`good` or a defect's name), or `None`
/// when `path` is not inside one.
pub fn category_in_test_folder<'p>(test: &Path, path: &'p Path) -> Option<&'p std::ffi::OsStr> {
    let rel = path.strip_prefix(test).ok()?;
    let mut parts = rel.components();
    let category = parts.next()?;
    parts.next()?;
    Some(category.as_os_str())
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
        let anomalous = category != GOOD;
        let images = match find_images(&dir) {
            Ok(v) => v,
            Err(Error::NoImages { .. }) => continue,
            Err(e) => return Err(e),
        };
        for path in images {
            let mask = if anomalous {
                mask_of(root, &category, &path)
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

/// The ground-truth mask of the test image `path` in the `category` folder under `root`
/// (`root/ground_truth/<category>/<stem>_mask.png`), when the file exists.
pub fn mask_of(root: &Path, category: &str, path: &Path) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_string_lossy();
    let m = root
        .join("ground_truth")
        .join(category)
        .join(format!("{stem}_mask.png"));
    m.is_file().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_category_folder() {
        let test = Path::new("/data/test");
        let label = |p: &str| label_in_test_folder(test, Path::new(p));
        assert_eq!(label("/data/test/good/000.png"), Some(false));
        assert_eq!(label("/data/test/scratch/000.png"), Some(true));
        assert_eq!(label("/data/test/scratch/deep/000.png"), Some(true));
        assert_eq!(label("/data/test/loose.png"), None);
        assert_eq!(label("/data/train/good/000.png"), None);
    }
}
