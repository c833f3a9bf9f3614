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
        "vulkan" | "gpu" => probe_vulkan(),
        other => Err(Error::Invalid(format!(
            "unknown device '{other}': this build has {}",
            available_devices().join(", ")
        ))),
    }
}

/// The first Vulkan GPU, after a tiny computation on it: without a usable adapter the
/// backend panics on a thread of its own, which would end the process with a backtrace
/// instead of a message.
#[cfg(feature = "vulkan")]
fn probe_vulkan() -> Result<Device> {
    use burn::prelude::Tensor;
    let device = Device::vulkan(Default::default());
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let works = std::panic::catch_unwind(move || {
        let _ = Tensor::<1>::zeros([1], &probe).into_data();
    })
    .is_ok();
    std::panic::set_hook(hook);
    if works {
        Ok(device)
    } else {
        Err(Error::Invalid(
            "--device vulkan: no usable Vulkan GPU (the Vulkan loader libvulkan.so.1 and the \
             GPU driver's Vulkan ICD must be installed); use --device cpu"
                .into(),
        ))
    }
}
