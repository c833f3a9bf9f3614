//! The library without files: fit an image anomaly detector on images made in memory, save
//! it, load it back as any model, and score new images.
//!
//! cargo run --release -p bottleneck --example in_memory

use bottleneck::progress::Silent;
use bottleneck::{AnomalyDetector, DetectParams, Detector, Device, Encode, Model};
use image::{DynamicImage, GrayImage, Luma};

/// A 32x32 "part": stripes at a slightly different phase each time; `defect` adds a bright
/// square.
fn part(phase: f32, defect: bool) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(32, 32, |x, y| {
        let stripe = ((x as f32 + phase) * 0.5).sin() * 0.3 + 0.5;
        let spot = defect && (12..18).contains(&x) && (12..18).contains(&y);
        Luma([if spot { 255 } else { (stripe * 255.0) as u8 }])
    }))
}

fn main() -> bottleneck::Result<()> {
    let good: Vec<DynamicImage> = (0..80).map(|i| part(i as f32 * 0.1, false)).collect();
    let params = DetectParams {
        epochs: Some(15),
        ..DetectParams::default()
    };
    let device = Device::flex();
    let detector = Detector::fit_images(&good, &params, &device, &Silent)?;

    let path = std::env::temp_dir().join("in_memory_example.safetensors");
    detector.save(&path)?;
    let model = Model::load(&path, &device)?;
    println!("saved and loaded {}", model.kind());
    let Model::ImageDetector(detector) = model else {
        unreachable!("an image detector was saved");
    };

    let new = [part(3.3, false), part(3.3, true)];
    for (name, verdict) in ["good", "defect"].iter().zip(detector.score(&new)?) {
        println!(
            "{name:>6}: score {:.3}, p-value {:.3}, anomaly: {}",
            verdict.score, verdict.p_value, verdict.is_anomaly
        );
    }
    let codes = detector.encode(&new)?;
    println!("codes: {} x {}", codes.nrows(), codes.ncols());
    std::fs::remove_file(&path).ok();
    Ok(())
}
