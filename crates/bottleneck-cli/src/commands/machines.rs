//! `bottleneck machines`: synthetic machine sounds in the MVTec layout.

use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::data::machines::{MachineConfig, generate_machine_sounds};
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct MachinesArgs {
    /// Output root.
    out: PathBuf,
    /// Sample rate in Hz.
    #[arg(long, default_value_t = MachineConfig::default().sample_rate)]
    sample_rate: u32,
    /// Length of each clip in seconds.
    #[arg(long, default_value_t = MachineConfig::default().seconds)]
    seconds: f32,
    /// Normal clips under train/good.
    #[arg(long, default_value_t = MachineConfig::default().train)]
    train: usize,
    /// Normal clips under test/good.
    #[arg(long, default_value_t = MachineConfig::default().test_good)]
    test_good: usize,
    /// Clips per fault under test/<fault>.
    #[arg(long, default_value_t = MachineConfig::default().test_per_fault)]
    per_fault: usize,
    /// Strength of the faults: 1 plainly audible, 0.2 subtle.
    #[arg(long, default_value_t = MachineConfig::default().severity)]
    severity: f32,
    #[arg(long, default_value_t = MachineConfig::default().seed)]
    seed: u64,
}

pub fn run(args: MachinesArgs, _device: &Device, bars: &Bars) -> Result<()> {
    let MachinesArgs {
        out,
        sample_rate,
        seconds,
        train,
        test_good,
        per_fault,
        severity,
        seed,
    } = args;
    if !(severity.is_finite() && severity >= 0.0) {
        anyhow::bail!("--severity must be a number of at least 0, got {severity}");
    }
    let cfg = MachineConfig {
        sample_rate,
        seconds,
        train,
        test_good,
        test_per_fault: per_fault,
        severity,
        seed,
    };
    let n = generate_machine_sounds(&out, &cfg)?;
    bars.note(&format!(
        "wrote {n} synthetic machine recordings under {}",
        out.display()
    ));
    Ok(())
}
