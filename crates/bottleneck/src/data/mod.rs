//! Data sources. Every source ends in flat channel-major `f32` inputs for the network.

pub mod images;
pub mod mvtec;
pub mod synthetic;
