//! The compute device is a run-time choice, so tasks never name a backend.

use burn::prelude::Device;

use crate::error::{Error, Result};

/// Device names this build accepts.
pub fn available_devices() -> &'static [&'static str] {
    if cfg!(feature = "vulkan") {
        &["cpu", "vulkan"]
    } else {
        &["cpu"]
    }
}

/// The device called `name`: `cpu` (burn's Flex backend) or, in builds with the `vulkan`
/// feature, `vulkan` (the first GPU).
pub fn device_by_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "vulkan")]
        "vulkan" | "gpu" => Ok(Device::vulkan(Default::default())),
        other => Err(Error::Invalid(format!(
            "unknown device '{other}': this build has {}",
            available_devices().join(", ")
        ))),
    }
}
