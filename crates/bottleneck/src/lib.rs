//! bottleneck: autoencoders trained on normal data and put to work.
//!
//! Every model kind has the same shape: `fit` on normal data in memory (or `fit` on a path),
//! then [`AnomalyDetector::score`] gives a [`Verdict`] per sample (score, conformal p-value,
//! whether it is flagged), [`Encode::encode`] the bottleneck codes, and `save` writes the
//! model file the `bottleneck` binary reads. [`Model::load`] reads any model file back.
//!
//! ```
//! use bottleneck::ndarray::{Array2, array};
//! use bottleneck::progress::Silent;
//! use bottleneck::{AnomalyDetector, Device, Model, Table, TableModel, TableParams};
//!
//! # fn main() -> bottleneck::Result<()> {
//! // 400 normal rows of three related sensor readings.
//! let rows: Vec<f32> = (0..400)
//!     .flat_map(|i| {
//!         let t = i as f32 / 40.0;
//!         [t.sin(), t.cos(), t.sin() * t.cos()]
//!     })
//!     .collect();
//! let columns = vec!["a".to_string(), "b".to_string(), "c".to_string()];
//! let normal = Table::new(columns.clone(), Array2::from_shape_vec((400, 3), rows).unwrap())?;
//!
//! let device = Device::flex();
//! let params = TableParams { epochs: Some(20), ..TableParams::default() };
//! let model = TableModel::fit_table(&normal, &params, &device, &Silent)?;
//!
//! let path = std::env::temp_dir().join(format!("doc-{}.safetensors", std::process::id()));
//! model.save(&path)?;
//! let Model::TableDetector(loaded) = Model::load(&path, &device)? else {
//!     panic!("a table model was saved");
//! };
//! # std::fs::remove_file(&path).ok();
//!
//! let new_rows = Table::new(columns, array![[0.0, 1.0, 0.0], [3.0, -3.0, 5.0]])?;
//! let verdicts = loaded.score(&new_rows)?;
//! assert!(!verdicts[0].is_anomaly && verdicts[1].is_anomaly);
//! assert!(verdicts[1].p_value <= 0.05);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "mimalloc")]
pub mod allocator;
// Unit tests run on the binaries' allocator (the dev-dependency turns the feature on).
#[cfg(all(test, feature = "mimalloc"))]
#[global_allocator]
static TEST_ALLOCATOR: allocator::Allocator = allocator::Allocator;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod io;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod report;
pub mod score;
pub mod task;
pub mod train;

pub use burn::prelude::Device;
pub use data::table::Table;
pub use error::{Error, Result};
pub use ndarray;
pub use task::{
    AnomalyDetector, AudioDenoiser, AudioDetector, Denoiser, Detector, Encode, Model, TableModel,
    Transformer, Verdict,
};
pub use task::{AudioDenoiseParams, AudioParams, DenoiseParams, DetectParams, TableParams};

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    /// An empty folder for one test, `bn-<name>-<pid>` in the temporary folder. Unit tests
    /// run at once in one process: each names its folder after its module and itself.
    pub fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
