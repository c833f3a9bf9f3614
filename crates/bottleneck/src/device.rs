//! The compute device is a run-time choice, so tasks never name a backend.

use burn::prelude::Device;

use crate::error::{Error, Result};

/// Device names this build accepts.
pub fn available_devices() -> &'static [&'static str] {
    if cfg!(feature = "vulkan") {
        &["auto", "cpu", "vulkan"]
    } else {
        &["auto", "cpu"]
    }
}

/// The device called `name`: `cpu` (burn's Flex backend), `vulkan` (the first GPU, in
/// builds with the `vulkan` feature), or `auto`: the GPU when this build has one and it
/// works, else the CPU. Fails on an unknown name or an unusable GPU asked for by name.
pub fn device_by_name(name: &str) -> Result<Device> {
    select_device(name).map(|(device, _)| device)
}

/// [`device_by_name`], with a line saying which device that is, for the user.
pub fn select_device(name: &str) -> Result<(Device, String)> {
    let cpu = || {
        let threads = rayon::current_num_threads();
        (Device::flex(), format!("cpu ({threads} threads)"))
    };
    match name {
        "cpu" => Ok(cpu()),
        #[cfg(feature = "vulkan")]
        "vulkan" | "gpu" => probe_vulkan().map(|d| (d, "vulkan (first GPU)".to_string())),
        #[cfg(feature = "vulkan")]
        "auto" => Ok(match probe_vulkan() {
            Ok(d) => (d, "vulkan (first GPU)".to_string()),
            Err(_) => {
                let (d, what) = cpu();
                (d, format!("{what}; no usable Vulkan GPU"))
            }
        }),
        #[cfg(not(feature = "vulkan"))]
        "auto" => Ok(cpu()),
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
    let works = crate::error::catch_quietly(move || {
        let _ = Tensor::<1>::zeros([1], &probe).into_data();
    })
    .is_ok();
    if works {
        Ok(device)
    } else {
        Err(Error::Invalid(
            "vulkan device: no usable Vulkan GPU (the Vulkan loader libvulkan.so.1 and the \
             GPU driver's Vulkan ICD must be installed); use the cpu device"
                .into(),
        ))
    }
}
