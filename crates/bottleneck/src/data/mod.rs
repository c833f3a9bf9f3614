//! Data sources. Images end in flat channel-major `f32` inputs for the network, tables in
//! row-major feature values with NaN for missing cells.

pub mod audio;
pub mod images;
pub mod machines;
pub mod mvtec;
pub mod planes;
pub mod scaling;
pub mod spectral;
pub mod synthetic;
pub mod table;
pub mod tiles;
