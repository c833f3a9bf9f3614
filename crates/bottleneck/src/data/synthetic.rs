//! Synthetic circuit boards: the built-in data of `demo` and of the tests. One board design
//! (pads, traces, a bus, vias, silkscreen) rendered with random placement, brightness, blur
//! and sensor noise; defective boards carry one injected defect and a ground-truth mask.
//! Written in the MVTec AD layout so every command treats it like a user's data.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The defect kinds, as folder names under `test/` and `ground_truth/`.
pub const DEFECTS: [&str; 6] = [
    "open_trace",
    "short",
    "missing_pad",
    "spurious_copper",
    "scratch",
    "stain",
];

/// How many boards of each kind to write, and how large.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    pub image_size: usize,
    pub train_good: usize,
    pub test_good: usize,
    pub test_per_defect: usize,
    pub seed: u64,
    /// Draw each defect's largest extent uniformly in this range of pixels (shrunk about
    /// its centre, never grown) instead of at the design's size: small defects on large
    /// boards, such as 3-8 px at 1,024 px.
    pub defect_px: Option<(f32, f32)>,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            train_good: 400,
            test_good: 60,
            test_per_defect: 20,
            seed: 7,
            defect_px: None,
        }
    }
}

/// Design units: the board is drawn on a 64 x 64 grid scaled to the image size.
const UNITS: f32 = 64.0;
/// Most optical blur in pixels: the design's blur grows with the image up to here, as a
/// camera's does not (0.3-0.7 units is 0.2-1.4 px up to 128 px, so smaller boards are
/// unchanged; at 1,024 px it would wipe out a 3-pixel defect).
const MAX_BLUR_PX: f32 = 1.5;
const BOARD: [f32; 3] = [0.08, 0.30, 0.14];
const PAD: [f32; 3] = [0.82, 0.64, 0.28];
const TRACE: [f32; 3] = [0.70, 0.52, 0.22];
const SILK: [f32; 3] = [0.92, 0.92, 0.88];
const HOLE: [f32; 3] = [0.05, 0.05, 0.05];

#[derive(Debug, Clone, Copy)]
enum Shape {
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
    },
    Circle {
        cx: f32,
        cy: f32,
        r: f32,
    },
    Capsule {
        ax: f32,
        ay: f32,
        bx: f32,
        by: f32,
        w: f32,
    },
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
    },
}

impl Shape {
    fn scaled(self, k: f32, dx: f32, dy: f32) -> Shape {
        match self {
            Shape::Rect { x0, y0, x1, y1 } => Shape::Rect {
                x0: (x0 + dx) * k,
                y0: (y0 + dy) * k,
                x1: (x1 + dx) * k,
                y1: (y1 + dy) * k,
            },
            Shape::Circle { cx, cy, r } => Shape::Circle {
                cx: (cx + dx) * k,
                cy: (cy + dy) * k,
                r: r * k,
            },
            Shape::Capsule { ax, ay, bx, by, w } => Shape::Capsule {
                ax: (ax + dx) * k,
                ay: (ay + dy) * k,
                bx: (bx + dx) * k,
                by: (by + dy) * k,
                w: w * k,
            },
            Shape::Ellipse { cx, cy, rx, ry } => Shape::Ellipse {
                cx: (cx + dx) * k,
                cy: (cy + dy) * k,
                rx: rx * k,
                ry: ry * k,
            },
        }
    }

    /// The shape's centre and largest extent.
    fn centre_extent(&self) -> (f32, f32, f32) {
        match *self {
            Shape::Rect { x0, y0, x1, y1 } => {
                ((x0 + x1) / 2.0, (y0 + y1) / 2.0, (x1 - x0).max(y1 - y0))
            }
            Shape::Circle { cx, cy, r } => (cx, cy, 2.0 * r),
            Shape::Capsule { ax, ay, bx, by, w } => (
                (ax + bx) / 2.0,
                (ay + by) / 2.0,
                ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt() + w,
            ),
            Shape::Ellipse { cx, cy, rx, ry } => (cx, cy, 2.0 * rx.max(ry)),
        }
    }

    /// The shape shrunk (or grown) by `f` about `(cx, cy)`.
    fn about(self, f: f32, cx: f32, cy: f32) -> Shape {
        let x = |v: f32| cx + (v - cx) * f;
        let y = |v: f32| cy + (v - cy) * f;
        match self {
            Shape::Rect { x0, y0, x1, y1 } => Shape::Rect {
                x0: x(x0),
                y0: y(y0),
                x1: x(x1),
                y1: y(y1),
            },
            Shape::Circle { cx: a, cy: b, r } => Shape::Circle {
                cx: x(a),
                cy: y(b),
                r: r * f,
            },
            Shape::Capsule { ax, ay, bx, by, w } => Shape::Capsule {
                ax: x(ax),
                ay: y(ay),
                bx: x(bx),
                by: y(by),
                w: w * f,
            },
            Shape::Ellipse {
                cx: a,
                cy: b,
                rx,
                ry,
            } => Shape::Ellipse {
                cx: x(a),
                cy: y(b),
                rx: rx * f,
                ry: ry * f,
            },
        }
    }

    /// Fraction of the pixel whose top-left corner is (px, py) covered by the shape
    /// (exact for rectangles, a one-pixel ramp across curved edges).
    fn coverage(&self, px: f32, py: f32) -> f32 {
        let (x, y) = (px + 0.5, py + 0.5);
        match *self {
            Shape::Rect { x0, y0, x1, y1 } => {
                let ox = (x1.min(px + 1.0) - x0.max(px)).max(0.0);
                let oy = (y1.min(py + 1.0) - y0.max(py)).max(0.0);
                ox * oy
            }
            Shape::Circle { cx, cy, r } => {
                let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
                (r - d + 0.5).clamp(0.0, 1.0)
            }
            Shape::Capsule { ax, ay, bx, by, w } => {
                let (vx, vy) = (bx - ax, by - ay);
                let len2 = (vx * vx + vy * vy).max(1e-9);
                let t = (((x - ax) * vx + (y - ay) * vy) / len2).clamp(0.0, 1.0);
                let d = ((x - ax - t * vx).powi(2) + (y - ay - t * vy).powi(2)).sqrt();
                (w / 2.0 - d + 0.5).clamp(0.0, 1.0)
            }
            Shape::Ellipse { cx, cy, rx, ry } => {
                let q = ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2);
                let d = (q.sqrt() - 1.0) * rx.min(ry);
                (0.5 - d).clamp(0.0, 1.0)
            }
        }
    }
}

struct Canvas {
    size: usize,
    rgb: Vec<[f32; 3]>,
}

impl Canvas {
    fn new(size: usize, color: [f32; 3]) -> Self {
        Self {
            size,
            rgb: vec![color; size * size],
        }
    }

    fn paint(&mut self, shape: Shape, color: [f32; 3], alpha: f32) {
        for py in 0..self.size {
            for px in 0..self.size {
                let a = alpha * shape.coverage(px as f32, py as f32);
                if a > 0.0 {
                    let c = &mut self.rgb[py * self.size + px];
                    for i in 0..3 {
                        c[i] = c[i] * (1.0 - a) + color[i] * a;
                    }
                }
            }
        }
    }

    /// Multiplies the colour under the shape by `factor` (a translucent stain).
    fn tint(&mut self, shape: Shape, factor: [f32; 3]) {
        for py in 0..self.size {
            for px in 0..self.size {
                let a = shape.coverage(px as f32, py as f32);
                if a > 0.0 {
                    let c = &mut self.rgb[py * self.size + px];
                    for i in 0..3 {
                        c[i] *= 1.0 - a + a * factor[i];
                    }
                }
            }
        }
    }

    /// Gaussian blur, one colour plane at a time with the anomaly maps' smoothing.
    fn blur(&mut self, sigma: f32) {
        let s = self.size;
        for c in 0..3 {
            let plane: Vec<f32> = self.rgb.iter().map(|p| p[c]).collect();
            let blurred = crate::score::maps::smooth(&plane, s, s, sigma);
            for (p, v) in self.rgb.iter_mut().zip(blurred) {
                p[c] = v;
            }
        }
    }
}

/// The board design in design units: copper pads, traces (with the bus traces listed
/// separately so a short can bridge two of them), vias and silkscreen.
struct Design {
    pads: Vec<Shape>,
    traces: Vec<Shape>,
    bus: Vec<f32>,
    vias: Vec<(f32, f32)>,
    silk: Vec<Shape>,
}

fn design() -> Design {
    let mut pads = Vec::new();
    let mut traces = Vec::new();
    let mut vias = Vec::new();
    for i in 0..4 {
        let y = 19.0 + 5.0 * i as f32;
        pads.push(Shape::Rect {
            x0: 16.0,
            y0: y,
            x1: 20.0,
            y1: y + 2.6,
        });
        pads.push(Shape::Rect {
            x0: 35.0,
            y0: y,
            x1: 39.0,
            y1: y + 2.6,
        });
        let yc = y + 1.3;
        traces.push(Shape::Capsule {
            ax: 39.0,
            ay: yc,
            bx: 52.0,
            by: yc,
            w: 1.4,
        });
        vias.push((54.5, yc));
        traces.push(Shape::Capsule {
            ax: 8.0,
            ay: yc,
            bx: 16.0,
            by: yc,
            w: 1.4,
        });
        vias.push((6.0, yc));
    }
    // A two-pad part with its trace down to a via.
    pads.push(Shape::Rect {
        x0: 42.0,
        y0: 6.0,
        x1: 45.5,
        y1: 9.5,
    });
    pads.push(Shape::Rect {
        x0: 50.0,
        y0: 6.0,
        x1: 53.5,
        y1: 9.5,
    });
    traces.push(Shape::Capsule {
        ax: 43.75,
        ay: 9.5,
        bx: 43.75,
        by: 14.0,
        w: 1.4,
    });
    vias.push((43.75, 15.5));
    // The bus: three parallel traces.
    let bus = vec![48.0, 51.0, 54.0];
    for &y in &bus {
        traces.push(Shape::Capsule {
            ax: 8.0,
            ay: y,
            bx: 56.0,
            by: y,
            w: 1.4,
        });
    }
    let silk = vec![
        Shape::Rect {
            x0: 22.0,
            y0: 17.0,
            x1: 33.0,
            y1: 17.7,
        },
        Shape::Rect {
            x0: 22.0,
            y0: 39.3,
            x1: 33.0,
            y1: 40.0,
        },
        Shape::Rect {
            x0: 22.0,
            y0: 17.0,
            x1: 22.7,
            y1: 40.0,
        },
        Shape::Rect {
            x0: 32.3,
            y0: 17.0,
            x1: 33.0,
            y1: 40.0,
        },
        Shape::Circle {
            cx: 24.5,
            cy: 19.5,
            r: 0.8,
        },
        Shape::Rect {
            x0: 8.0,
            y0: 6.0,
            x1: 10.0,
            y1: 10.0,
        },
        Shape::Rect {
            x0: 11.0,
            y0: 6.0,
            x1: 15.0,
            y1: 7.0,
        },
        Shape::Rect {
            x0: 11.0,
            y0: 9.0,
            x1: 15.0,
            y1: 10.0,
        },
        Shape::Rect {
            x0: 40.5,
            y0: 4.5,
            x1: 55.0,
            y1: 5.0,
        },
        Shape::Rect {
            x0: 40.5,
            y0: 11.0,
            x1: 55.0,
            y1: 11.5,
        },
    ];
    Design {
        pads,
        traces,
        bus,
        vias,
        silk,
    }
}

/// A defect to inject: what to paint and where its mask is.
struct Defect {
    paint: Vec<(Shape, [f32; 3], f32)>,
    stain: Option<(Shape, [f32; 3])>,
    mask: Shape,
}

fn random_defect(kind: &str, d: &Design, board: [f32; 3], rng: &mut ChaCha8Rng) -> Defect {
    match kind {
        "open_trace" => {
            let t = d.traces[rng.random_range(0..d.traces.len())];
            let Shape::Capsule { ax, ay, bx, by, .. } = t else {
                unreachable!("traces are capsules")
            };
            let f = rng.random_range(0.3..0.7);
            let (cx, cy) = (ax + f * (bx - ax), ay + f * (by - ay));
            let half = rng.random_range(1.3..2.0);
            let gap = if (by - ay).abs() > (bx - ax).abs() {
                Shape::Rect {
                    x0: cx - 1.2,
                    y0: cy - half,
                    x1: cx + 1.2,
                    y1: cy + half,
                }
            } else {
                Shape::Rect {
                    x0: cx - half,
                    y0: cy - 1.2,
                    x1: cx + half,
                    y1: cy + 1.2,
                }
            };
            Defect {
                paint: vec![(gap, board, 1.0)],
                stain: None,
                mask: gap,
            }
        }
        "short" => {
            let i = rng.random_range(0..d.bus.len() - 1);
            let x = rng.random_range(12.0..52.0);
            let w = rng.random_range(2.0..3.0);
            let bridge = Shape::Rect {
                x0: x,
                y0: d.bus[i],
                x1: x + w,
                y1: d.bus[i + 1],
            };
            Defect {
                paint: vec![(bridge, TRACE, 1.0)],
                stain: None,
                mask: bridge,
            }
        }
        "missing_pad" => {
            let pad = d.pads[rng.random_range(0..d.pads.len())];
            let Shape::Rect { x0, y0, x1, y1 } = pad else {
                unreachable!("pads are rectangles")
            };
            let hole = Shape::Rect {
                x0: x0 - 0.3,
                y0: y0 - 0.3,
                x1: x1 + 0.3,
                y1: y1 + 0.3,
            };
            Defect {
                paint: vec![(hole, board, 1.0)],
                stain: None,
                mask: hole,
            }
        }
        "spurious_copper" => {
            // Free areas of the design: below the part, between chip and vias, left margin.
            let zones = [
                (26.0, 8.0, 36.0, 13.0),
                (44.0, 28.0, 50.0, 42.0),
                (4.0, 40.0, 14.0, 44.0),
            ];
            let (x0, y0, x1, y1) = zones[rng.random_range(0..zones.len())];
            let blob = Shape::Circle {
                cx: rng.random_range(x0..x1),
                cy: rng.random_range(y0..y1),
                r: rng.random_range(1.2..2.2),
            };
            Defect {
                paint: vec![(blob, TRACE, 1.0)],
                stain: None,
                mask: blob,
            }
        }
        "scratch" => {
            let (cx, cy) = (rng.random_range(12.0..52.0), rng.random_range(12.0..52.0));
            let angle = rng.random_range(0.0..std::f32::consts::PI);
            let len = rng.random_range(10.0..20.0);
            let (dx, dy) = (angle.cos() * len / 2.0, angle.sin() * len / 2.0);
            let w = rng.random_range(0.6..0.9);
            let line = Shape::Capsule {
                ax: cx - dx,
                ay: cy - dy,
                bx: cx + dx,
                by: cy + dy,
                w,
            };
            let mask = Shape::Capsule {
                ax: cx - dx,
                ay: cy - dy,
                bx: cx + dx,
                by: cy + dy,
                w: w + 1.0,
            };
            Defect {
                paint: vec![(line, [0.85, 0.85, 0.82], 0.8)],
                stain: None,
                mask,
            }
        }
        _ => {
            let e = Shape::Ellipse {
                cx: rng.random_range(12.0..52.0),
                cy: rng.random_range(12.0..52.0),
                rx: rng.random_range(3.0..6.0),
                ry: rng.random_range(2.5..5.0),
            };
            Defect {
                paint: vec![],
                stain: Some((e, [0.55, 0.42, 0.25])),
                mask: e,
            }
        }
    }
}

/// Renders one board (and, with a defect, its mask) at `size` pixels; with `defect_px`
/// the defect's largest extent is drawn in that range of pixels.
fn render(
    size: usize,
    defect: Option<&str>,
    defect_px: Option<(f32, f32)>,
    rng: &mut ChaCha8Rng,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let d = design();
    let k = size as f32 / UNITS;
    let (dx, dy) = (rng.random_range(-1.5..1.5), rng.random_range(-1.5..1.5));
    let tone: f32 = rng.random_range(0.9..1.1);
    let board = [
        BOARD[0] * tone,
        BOARD[1] * rng.random_range(0.92..1.08),
        BOARD[2] * tone,
    ];
    let mut c = Canvas::new(size, board);
    for t in &d.traces {
        c.paint(t.scaled(k, dx, dy), TRACE, 1.0);
    }
    for p in &d.pads {
        c.paint(p.scaled(k, dx, dy), PAD, 1.0);
    }
    for &(x, y) in &d.vias {
        c.paint(
            Shape::Circle {
                cx: x,
                cy: y,
                r: 1.8,
            }
            .scaled(k, dx, dy),
            PAD,
            1.0,
        );
        c.paint(
            Shape::Circle {
                cx: x,
                cy: y,
                r: 0.7,
            }
            .scaled(k, dx, dy),
            HOLE,
            1.0,
        );
    }
    for s in &d.silk {
        c.paint(s.scaled(k, dx, dy), SILK, 0.9);
    }
    let mut mask = None;
    if let Some(kind) = defect {
        let mut def = random_defect(kind, &d, board, rng);
        if let Some((lo, hi)) = defect_px {
            let (cx, cy, extent) = def.mask.centre_extent();
            let want = rng.random_range(lo..=hi) / k;
            let f = (want / extent).min(1.0);
            def.mask = def.mask.about(f, cx, cy);
            for (shape, _, _) in &mut def.paint {
                *shape = shape.about(f, cx, cy);
            }
            if let Some((shape, _)) = &mut def.stain {
                *shape = shape.about(f, cx, cy);
            }
        }
        for (shape, color, alpha) in def.paint {
            c.paint(shape.scaled(k, dx, dy), color, alpha);
        }
        if let Some((shape, factor)) = def.stain {
            c.tint(shape.scaled(k, dx, dy), factor);
        }
        let m = def.mask.scaled(k, dx, dy);
        let mut pixels = vec![0u8; size * size];
        for py in 0..size {
            for px in 0..size {
                if m.coverage(px as f32, py as f32) >= 0.5 {
                    pixels[py * size + px] = 255;
                }
            }
        }
        mask = Some(pixels);
    }
    c.blur((rng.random_range(0.3..0.7) * k).min(MAX_BLUR_PX));
    let gain: f32 = rng.random_range(0.9..1.1);
    let noise: f32 = rng.random_range(0.01..0.025);
    let mut out = Vec::with_capacity(size * size * 3);
    for px in &c.rgb {
        for v in px {
            let n = gaussian(rng) * noise;
            out.push(((v * gain + n).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    (out, mask)
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// Saves `pixels` (row-major, `channels` per pixel: 1 for masks, 3 for boards) as PNG.
fn save_png(path: &Path, size: usize, channels: usize, pixels: Vec<u8>) -> Result<()> {
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::save_buffer(path, &pixels, size as u32, size as u32, color).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Writes boards under `root` in the MVTec AD layout and returns how many images it wrote.
/// The same config and seed give the same files.
pub fn generate_boards(root: &Path, cfg: &BoardConfig) -> Result<usize> {
    if cfg.image_size < 16 {
        return Err(Error::Invalid(
            "boards need an image size of at least 16".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut written = 0;
    for (dir, count) in [("train/good", cfg.train_good), ("test/good", cfg.test_good)] {
        let d = root.join(dir);
        mkdir(&d)?;
        for i in 0..count {
            let (img, _) = render(cfg.image_size, None, None, &mut rng);
            save_png(&d.join(format!("{i:03}.png")), cfg.image_size, 3, img)?;
            written += 1;
        }
    }
    for kind in DEFECTS {
        let d = root.join("test").join(kind);
        let g = root.join("ground_truth").join(kind);
        mkdir(&d)?;
        mkdir(&g)?;
        for i in 0..cfg.test_per_defect {
            let (img, mask) = render(cfg.image_size, Some(kind), cfg.defect_px, &mut rng);
            save_png(&d.join(format!("{i:03}.png")), cfg.image_size, 3, img)?;
            if let Some(m) = mask {
                save_png(&g.join(format!("{i:03}_mask.png")), cfg.image_size, 1, m)?;
            }
            written += 1;
        }
    }
    Ok(written)
}

/// Names of the sensors in [`sensor_rows`].
pub const SENSORS: [&str; 8] = [
    "temp_in",
    "temp_out",
    "pressure",
    "flow",
    "vibration",
    "current",
    "speed",
    "noise_db",
];

/// `n` rows of readings from 8 sensors of a machine, driven by 3 hidden factors (load,
/// ambient temperature, wear) with noise, in each sensor's own units. With `faulty`, each
/// row has one sensor (returned beside it) whose reading breaks its relation to the others:
/// stuck, drifted or noisy. For tests and examples; seeded.
pub fn sensor_rows(n: usize, faulty: bool, seed: u64) -> Vec<([f32; 8], Option<usize>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let load: f32 = rng.random_range(0.2..1.0);
            let ambient: f32 = rng.random_range(10.0..30.0);
            let wear: f32 = rng.random_range(0.0..1.0);
            let mut noise = |s: f32| s * (rng.random::<f32>() - 0.5) * 2.0;
            let mut row = [
                ambient + 40.0 * load + noise(0.5),
                ambient + 55.0 * load + 5.0 * wear + noise(0.5),
                2.0 + 3.0 * load + noise(0.05),
                100.0 * load - 10.0 * wear + noise(1.0),
                0.5 + 2.0 * wear + load + noise(0.05),
                5.0 + 20.0 * load + 2.0 * wear + noise(0.2),
                1500.0 * load + noise(10.0),
                60.0 + 15.0 * load + 10.0 * wear + noise(0.5),
            ];
            let broken = faulty.then(|| {
                let j = rng.random_range(0..8);
                let spread = [20.0, 28.0, 1.5, 50.0, 1.5, 10.0, 750.0, 9.0][j];
                row[j] += if rng.random::<bool>() {
                    spread
                } else {
                    -spread
                };
                j
            });
            (row, broken)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defects_change_pixels_inside_their_mask() {
        for kind in DEFECTS {
            let mut a = ChaCha8Rng::seed_from_u64(3);
            let mut b = ChaCha8Rng::seed_from_u64(3);
            let (good, _) = render(64, None, None, &mut a);
            let (bad, mask) = render(64, Some(kind), None, &mut b);
            let mask = mask.unwrap();
            let area = mask.iter().filter(|&&m| m > 0).count();
            assert!(area >= 3, "{kind}: mask has {area} pixels");
            // Same placement draws happen first, so the boards differ mainly at the defect.
            let mut inside = 0.0;
            for (i, &m) in mask.iter().enumerate() {
                if m > 0 {
                    for c in 0..3 {
                        inside += (good[i * 3 + c] as f32 - bad[i * 3 + c] as f32).abs();
                    }
                }
            }
            assert!(
                inside / area as f32 > 20.0,
                "{kind}: mean change {}",
                inside / area as f32
            );
        }
    }

    #[test]
    fn layout_is_mvtec_and_reproducible() {
        let root = std::env::temp_dir().join(format!("bn-boards-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cfg = BoardConfig {
            image_size: 32,
            train_good: 2,
            test_good: 1,
            test_per_defect: 1,
            seed: 1,
            defect_px: None,
        };
        assert_eq!(generate_boards(&root, &cfg).unwrap(), 2 + 1 + DEFECTS.len());
        let first = std::fs::read(root.join("test/short/000.png")).unwrap();
        assert!(root.join("ground_truth/short/000_mask.png").is_file());
        generate_boards(&root, &cfg).unwrap();
        assert_eq!(
            first,
            std::fs::read(root.join("test/short/000.png")).unwrap()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
