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
/// builds with the `vulkan` feature), or `auto`: a Vulkan GPU when this build has one and it
/// works, else the CPU. A software Vulkan device (Mesa's llvmpipe, installed on many machines
/// without a GPU) is no GPU: `auto` passes it over and `vulkan` refuses it, since its shader
/// compiler crashes the process on burn's shaders (a segmentation fault in pipeline creation,
/// with Mesa 22.3 and 25.0; `bash bench/vulkan_software.sh` checks). Fails on an unknown name
/// or an unusable or software device asked for by name.
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
        "vulkan" | "gpu" => match probe_vulkan()? {
            (d, Adapter::Card(name)) => Ok((d, format!("vulkan ({name})"))),
            (_, Adapter::Software(name)) => Err(Error::Invalid(format!(
                "vulkan device: the Vulkan device found is {name}, a software one on the \
                 CPU, not a GPU, and its shader compiler crashes on this build's shaders \
                 (Mesa's llvmpipe 22.3 and 25.0 both do): use --device cpu (or auto)"
            ))),
        },
        #[cfg(feature = "vulkan")]
        "auto" => Ok(match probe_vulkan() {
            Ok((d, Adapter::Card(name))) => (d, format!("vulkan ({name})")),
            Ok((_, Adapter::Software(name))) => {
                let (d, what) = cpu();
                (
                    d,
                    format!("{what}; the Vulkan device found, {name}, is software, not a GPU"),
                )
            }
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

/// What a Vulkan device runs on, by the name it gives itself.
#[cfg(feature = "vulkan")]
enum Adapter {
    /// A graphics card (discrete, integrated or virtual).
    Card(String),
    /// A software rasterizer on the CPU, such as Mesa's llvmpipe.
    Software(String),
}

/// The Vulkan device wgpu ranks first (a high-power GPU before others), after a tiny
/// computation on it: without a usable adapter the backend panics on a thread of its own,
/// which would end the process with a backtrace instead of a message.
#[cfg(feature = "vulkan")]
fn probe_vulkan() -> Result<(Device, Adapter)> {
    use burn::prelude::Tensor;
    let device = Device::vulkan(Default::default());
    let probe = device.clone();
    let identity = crate::error::catch_quietly(move || {
        let _ = Tensor::<1>::zeros([1], &probe).into_data();
        probe.identity()
    });
    match identity {
        // cubecl reports no card behind a device whose adapter type is the CPU.
        Ok(Some(id)) if id.physical.is_none() => Ok((device, Adapter::Software(id.name))),
        Ok(Some(id)) => Ok((device, Adapter::Card(id.name))),
        Ok(None) => Ok((device, Adapter::Card("first GPU".into()))),
        Err(_) => Err(Error::Invalid(
            "vulkan device: no usable Vulkan GPU (the Vulkan loader libvulkan.so.1 and the \
             GPU driver's Vulkan ICD must be installed); use the cpu device"
                .into(),
        )),
    }
}
