//! In-process scoring time of a model on data held in memory, the figure the Python
//! package's overhead is measured against (bench/python.sh).
//!
//! cargo run --release -p bottleneck --example score_in_memory -- MODEL DATA.npy [REPEATS]
//!
//! DATA.npy: float32 rows `(n, features)` for a table model (columns in the model's order),
//! or uint8 images `(n, h, w)` (grayscale) or `(n, h, w, 3)` (RGB) for an image model. Prints one JSON line with the best time
//! of REPEATS (default 3) calls of `score` on the whole array.

use std::time::Instant;

use bottleneck::{AnomalyDetector, Device, Model, Table};
use image::{DynamicImage, GrayImage, RgbImage};
use ndarray::{Array2, Array3, Array4, Axis};
use ndarray_npy::read_npy;

// As in the binary (and the Python module): the CLI's in-process figure.
#[global_allocator]
static GLOBAL: bottleneck::allocator::Allocator = bottleneck::allocator::Allocator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, data, rest @ ..] = args.as_slice() else {
        return Err("usage: score_in_memory MODEL DATA.npy [REPEATS]".into());
    };
    let repeats: usize = rest.first().map_or(Ok(3), |r| r.parse())?;
    let device = Device::flex();
    let model = Model::load(model.as_ref(), &device)?;
    let mut best = f64::INFINITY;
    let n;
    match &model {
        Model::TableDetector(t) => {
            let values: Array2<f32> = read_npy(data)?;
            n = values.nrows();
            let table = Table::new(t.meta().prep.features.clone(), values)?;
            for _ in 0..repeats {
                let start = Instant::now();
                std::hint::black_box(t.score(&table)?);
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        Model::ImageDetector(d) => {
            let images: Vec<DynamicImage> = match read_npy::<_, Array3<u8>>(data) {
                Ok(pixels) => {
                    let (h, w) = (pixels.shape()[1] as u32, pixels.shape()[2] as u32);
                    pixels
                        .axis_iter(Axis(0))
                        .map(|img| {
                            let raw = img.iter().copied().collect();
                            DynamicImage::ImageLuma8(
                                GrayImage::from_raw(w, h, raw).expect("h x w pixels"),
                            )
                        })
                        .collect()
                }
                Err(_) => {
                    let pixels: Array4<u8> = read_npy(data)?;
                    let (h, w) = (pixels.shape()[1] as u32, pixels.shape()[2] as u32);
                    pixels
                        .axis_iter(Axis(0))
                        .map(|img| {
                            let raw = img.iter().copied().collect();
                            DynamicImage::ImageRgb8(
                                RgbImage::from_raw(w, h, raw).expect("h x w x 3 pixels"),
                            )
                        })
                        .collect()
                }
            };
            n = images.len();
            for _ in 0..repeats {
                let start = Instant::now();
                std::hint::black_box(d.score(&images)?);
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        other => return Err(format!("{} cannot score", other.kind()).into()),
    }
    println!(
        "{{\"samples\": {n}, \"seconds\": {best:.4}, \"samples_per_s\": {:.1}}}",
        n as f64 / best
    );
    Ok(())
}
