//! PNG outputs of a run: sample grids (images), scatter plots (2-D data), the loss curve.
//! Everything is rendered in memory and written atomically (temp file + rename).
//!
//! Text of every plot in the workspace (these and the bench crate's) goes through one path:
//! plotters' pure-Rust `ab_glyph` renderer with a TrueType font read from disk at run time
//! ([`ensure_font`]), so building needs no system font libraries.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{ImageBuffer, Rgb, RgbImage};
use ndarray::ArrayView2;
use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` atomically: a temp file in the same folder, synced, then renamed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    tweedie_nets::checkpoint::atomic_write(path, bytes).map_err(|e| TrainError::io(path, e))
}

/// Environment variable naming a TrueType/OpenType font file for plot text; it overrides the
/// search of [`FONT_PATHS`].
pub const FONT_ENV: &str = "TWEEDIE_FONT";

/// The family name every plot asks plotters for; [`ensure_font`] registers the font under it.
pub const FONT_FAMILY: &str = "sans-serif";

/// Where the plot font is looked for, in order: DejaVu Sans as Debian/Ubuntu
/// (`fonts-dejavu-core`, which `.ci/run` installs), Fedora, Arch and Alpine place it, then
/// Arial on macOS and Windows.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/ttf-dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers the plot font with plotters once per process and returns the file it came from:
/// `$TWEEDIE_FONT` if set, else the first of [`FONT_PATHS`] that exists.
///
/// plotters keeps registered fonts for the life of the process (`&'static [u8]`), so the
/// file's bytes are leaked once, on the first call.
pub fn ensure_font() -> Result<PathBuf> {
    static FONT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(load_font)
        .clone()
        .map_err(TrainError::Font)
}

fn load_font() -> std::result::Result<PathBuf, String> {
    let path = find_font(std::env::var_os(FONT_ENV).map(PathBuf::from))?;
    register_font_file(&path)?;
    Ok(path)
}

/// The font file: `explicit` (from [`FONT_ENV`]) if given, else the first of [`FONT_PATHS`].
fn find_font(explicit: Option<PathBuf>) -> std::result::Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    FONT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no font found (looked for {}); install DejaVu Sans (Debian/Ubuntu: \
                 `apt-get install fonts-dejavu-core`) or set {FONT_ENV} to a .ttf file",
                FONT_PATHS.join(", ")
            )
        })
}

fn register_font_file(path: &Path) -> std::result::Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a TrueType/OpenType font", path.display()))
}

fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
    atomic_write(path, buf.get_ref())
}

/// A grid of images: each row of `x` is one image of shape [C, H, W] with values in [−1, 1]
/// (clamped), C = 1 (grey) or 3 (RGB); tiles are upscaled to at least 32 pixels and separated
/// by a 2-pixel border.
pub fn write_image_grid(path: &Path, x: ArrayView2<f32>, shape: &[usize]) -> Result<()> {
    let &[c, h, w] = shape else {
        return Err(TrainError::Data(format!(
            "image grid needs [C, H, W] samples, got {shape:?}"
        )));
    };
    if c != 1 && c != 3 {
        return Err(TrainError::Data(format!(
            "image grid needs 1 or 3 channels, got {c}"
        )));
    }
    let n = x.nrows().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let scale = (32usize.div_ceil(h.max(1))).max(1);
    let (th, tw, pad) = (h * scale, w * scale, 2usize);
    let (ih, iw) = (rows * (th + pad) + pad, cols * (tw + pad) + pad);
    let mut img: RgbImage = ImageBuffer::from_pixel(iw as u32, ih as u32, Rgb([40, 40, 40]));
    let to_u8 = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    for (k, row) in x.rows().into_iter().enumerate() {
        let (gy, gx) = (k / cols, k % cols);
        let (oy, ox) = (pad + gy * (th + pad), pad + gx * (tw + pad));
        for yy in 0..th {
            for xx in 0..tw {
                let (sy, sx) = (yy / scale, xx / scale);
                let px = if c == 1 {
                    let g = to_u8(row[sy * w + sx]);
                    [g, g, g]
                } else {
                    [0, 1, 2].map(|ch| to_u8(row[ch * h * w + sy * w + sx]))
                };
                img.put_pixel((ox + xx) as u32, (oy + yy) as u32, Rgb(px));
            }
        }
    }
    save_png(path, &img)
}

/// Diverging blue–white–red colour of t ∈ [−1, 1] (clamped): −1 blue, 0 white, +1 red.
fn diverging(t: f32) -> [u8; 3] {
    // Anchors of a ColorBrewer-like RdBu scale, linearly interpolated.
    const A: [[f32; 3]; 5] = [
        [33.0, 102.0, 172.0],
        [146.0, 197.0, 222.0],
        [247.0, 247.0, 247.0],
        [244.0, 165.0, 130.0],
        [178.0, 24.0, 43.0],
    ];
    let u = (t.clamp(-1.0, 1.0) + 1.0) * 2.0;
    let i = (u.floor() as usize).min(3);
    let f = u - i as f32;
    [0, 1, 2].map(|ch| (A[i][ch] * (1.0 - f) + A[i + 1][ch] * f).round() as u8)
}

/// A grid of fields [C, H, W] with any number of channels: each sample is a group of C tiles
/// (one per variable) coloured by a diverging map symmetric about 0 and scaled per channel to
/// that channel's largest |value| over the samples; tiles are upscaled to at least 32 pixels.
pub fn write_field_grid(path: &Path, x: ArrayView2<f32>, shape: &[usize]) -> Result<()> {
    let c = shape.first().copied().unwrap_or(1).max(1);
    let cols = (x.nrows().max(1) as f64 / c as f64).sqrt().ceil().max(1.0) as usize;
    write_field_grid_cols(path, x, shape, cols)
}

/// As [`write_field_grid`] with `cols` samples per row of the grid (rows of a figure that
/// mean something: one kind of field per row).
pub fn write_field_grid_cols(
    path: &Path,
    x: ArrayView2<f32>,
    shape: &[usize],
    cols: usize,
) -> Result<()> {
    let &[c, h, w] = shape else {
        return Err(TrainError::Data(format!(
            "field grid needs [C, H, W] samples, got {shape:?}"
        )));
    };
    let hw = h * w;
    if c == 0 || hw == 0 || x.ncols() != c * hw {
        return Err(TrainError::Data(format!(
            "field grid: rows have {} values, shape {shape:?} needs {}",
            x.ncols(),
            c * hw
        )));
    }
    let amp: Vec<f32> = (0..c)
        .map(|k| {
            x.rows()
                .into_iter()
                .flat_map(|r| r.slice(ndarray::s![k * hw..(k + 1) * hw]).to_vec())
                .fold(
                    0.0f32,
                    |m, v| if v.is_finite() { m.max(v.abs()) } else { m },
                )
                .max(1e-12)
        })
        .collect();
    let n = x.nrows().max(1);
    let cols = cols.max(1);
    let rows = n.div_ceil(cols);
    let scale = (32usize.div_ceil(h.min(w).max(1))).max(1);
    let (th, tw, pad) = (h * scale, w * scale, 2usize);
    let gw = c * (tw + pad) + pad;
    let (ih, iw) = (rows * (th + 2 * pad) + pad, cols * gw + pad);
    let mut img: RgbImage = ImageBuffer::from_pixel(iw as u32, ih as u32, Rgb([40, 40, 40]));
    for (s, row) in x.rows().into_iter().enumerate() {
        let (gy, gx) = (s / cols, s % cols);
        for k in 0..c {
            let (oy, ox) = (pad + gy * (th + 2 * pad), pad + gx * gw + k * (tw + pad));
            for yy in 0..th {
                for xx in 0..tw {
                    let v = row[k * hw + (yy / scale) * w + xx / scale];
                    let px = if v.is_finite() {
                        diverging(v / amp[k])
                    } else {
                        [128, 128, 128]
                    };
                    img.put_pixel((ox + xx) as u32, (oy + yy) as u32, Rgb(px));
                }
            }
        }
    }
    save_png(path, &img)
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("plot {}: {e}", path.display()))
}

/// Scatter plot of 2-D samples (blue) over reference data (grey), without text (so it needs
/// no font).
pub fn write_scatter(
    path: &Path,
    samples: ArrayView2<f32>,
    reference: Option<ArrayView2<f32>>,
) -> Result<()> {
    if samples.ncols() < 2 {
        return Err(TrainError::Data(format!(
            "scatter plot needs 2-D samples, got {}",
            samples.ncols()
        )));
    }
    let (w, h) = (640u32, 640u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let pts = |a: ArrayView2<f32>| -> Vec<(f64, f64)> {
        a.rows()
            .into_iter()
            .map(|r| (r[0] as f64, r[1] as f64))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect()
    };
    let s = pts(samples);
    let r = reference.map(pts).unwrap_or_default();
    let lim = r
        .iter()
        .chain(&s)
        .map(|p| p.0.abs().max(p.1.abs()))
        .fold(1.0f64, f64::max)
        .min(
            r.iter()
                .map(|p| p.0.abs().max(p.1.abs()))
                .fold(0.0, f64::max)
                * 1.5
                + 1.0,
        );
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .build_cartesian_2d(-lim..lim, -lim..lim)
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(
                r.iter()
                    .map(|&p| Circle::new(p, 1, RGBColor(170, 170, 170).filled())),
            )
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(
                s.iter()
                    .map(|&p| Circle::new(p, 2, RGBColor(30, 90, 200).filled())),
            )
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(path, "buffer size"))?;
    save_png(path, &img)
}

/// Loss curve: raw loss (light) and its running mean over 1/20 of the run (dark), log-scale y.
pub fn write_loss_plot(path: &Path, steps: &[u64], losses: &[f64]) -> Result<()> {
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .zip(losses)
        .filter(|(_, &l)| l.is_finite() && l > 0.0)
        .map(|(&s, &l)| (s as f64, l))
        .collect();
    if pts.is_empty() {
        return Err(TrainError::Other("no finite positive loss to plot".into()));
    }
    ensure_font()?;
    let win = (pts.len() / 20).max(1);
    let smooth: Vec<(f64, f64)> = (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(win - 1);
            let m = pts[lo..=i].iter().map(|p| p.1).sum::<f64>() / (i - lo + 1) as f64;
            (pts[i].0, m)
        })
        .collect();
    let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
    let lo = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let hi = pts.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let (w, h) = (800u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(15)
            .caption("training loss", (FONT_FAMILY, 20))
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (lo * 0.9..hi * 1.1).log_scale())
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(pts.clone(), RGBColor(170, 190, 230)))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(
                smooth,
                RGBColor(20, 60, 160).stroke_width(2),
            ))
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(path, "buffer size"))?;
    save_png(path, &img)
}

/// Held-out denoising error against σ̃ on log–log axes: the model (dark), the reference
/// denoiser (orange) and the identity's σ̃² (grey), as in EDM's loss-per-σ̃ figure. Labels
/// write σ̃ as σ/α: the font renderer does not place combining marks.
pub fn write_denoising_plot(
    path: &Path,
    sigmas: &[f64],
    model: &[f64],
    reference: &[f64],
    reference_name: &str,
) -> Result<()> {
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        sigmas
            .iter()
            .zip(v)
            .filter(|(&s, &m)| s > 0.0 && m.is_finite() && m > 0.0)
            .map(|(&s, &m)| (s, m))
            .collect()
    };
    let (pm, pr) = (pts(model), pts(reference));
    let pi: Vec<(f64, f64)> = sigmas.iter().map(|&s| (s, s * s)).collect();
    let pi = pi.into_iter().filter(|p| p.0 > 0.0).collect::<Vec<_>>();
    let all: Vec<&(f64, f64)> = pm.iter().chain(&pr).chain(&pi).collect();
    if pm.is_empty() || all.is_empty() {
        return Err(TrainError::Other(
            "no positive denoising errors to plot".into(),
        ));
    }
    ensure_font()?;
    let fold = |f: fn(f64, f64) -> f64, init: f64, y: bool| {
        all.iter().map(|p| if y { p.1 } else { p.0 }).fold(init, f)
    };
    let (x0, x1) = (
        fold(f64::min, f64::MAX, false),
        fold(f64::max, f64::MIN, false),
    );
    let (y0, y1) = (
        fold(f64::min, f64::MAX, true),
        fold(f64::max, f64::MIN, true),
    );
    let (w, h) = (640u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(15)
            .caption("held-out denoising error", (FONT_FAMILY, 20))
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x0 * 0.8..x1 * 1.25).log_scale(),
                (y0 * 0.5..y1 * 2.0).log_scale(),
            )
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("noise level σ/α")
            .y_desc("MSE per element")
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let series = [
            (pi, RGBColor(170, 170, 170), "identity ((σ/α)²)".to_string()),
            (pr, RGBColor(230, 120, 20), reference_name.to_string()),
            (pm, RGBColor(20, 60, 160), "model".to_string()),
        ];
        for (p, color, label) in series {
            chart
                .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(p.into_iter().map(|q| Circle::new(q, 3, color.filled())))
                .map_err(|e| plot_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(path, "buffer size"))?;
    save_png(path, &img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn grid_places_each_image_in_its_tile() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let p = dir.path().join("g.png");
        // 5 images of 2×2: image k is uniformly (k/2 − 1) → grey levels 0, 64, 128, 191, 255.
        let x = Array2::from_shape_fn((5, 4), |(k, _)| k as f32 / 2.0 - 1.0);
        write_image_grid(&p, x.view(), &[1, 2, 2])?;
        let img = image::open(&p)
            .map_err(|e| TrainError::Other(e.to_string()))?
            .to_rgb8();
        // 3 columns × 2 rows of 32-pixel tiles with 2-pixel borders.
        assert_eq!((img.width(), img.height()), (3 * 34 + 2, 2 * 34 + 2));
        assert_eq!(img.get_pixel(2 + 5, 2 + 5)[0], 0);
        assert_eq!(img.get_pixel(2 + 34 + 5, 2 + 5)[0], 64);
        assert_eq!(img.get_pixel(2 + 34 + 5, 2 + 34 + 5)[0], 255);
        assert_eq!(img.get_pixel(0, 0)[0], 40);
        assert!(write_image_grid(&p, x.view(), &[4]).is_err());
        Ok(())
    }

    #[test]
    fn a_missing_or_invalid_font_is_a_clear_error() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let named = dir.path().join("mine.ttf");
        assert_eq!(find_font(Some(named.clone())), Ok(named.clone()));
        let e = register_font_file(&named).unwrap_err();
        assert!(e.contains("mine.ttf"), "{e}");
        std::fs::write(&named, b"not a font").map_err(|e| TrainError::io(&named, e))?;
        let e = register_font_file(&named).unwrap_err();
        assert!(e.contains("not a TrueType/OpenType font"), "{e}");
        Ok(())
    }

    #[test]
    fn plots_render_and_a_read_only_folder_is_a_clear_error() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let s = Array2::from_shape_fn((50, 2), |(i, j)| (i as f32 * 0.1).sin() * (j as f32 + 1.0));
        write_scatter(&dir.path().join("s.png"), s.view(), Some(s.view()))?;
        let steps: Vec<u64> = (0..100).collect();
        let losses: Vec<f64> = steps.iter().map(|&s| 1.0 / (1.0 + s as f64)).collect();
        write_loss_plot(&dir.path().join("l.png"), &steps, &losses)?;
        let sig = [0.1, 1.0, 10.0];
        let d = dir.path().join("d.png");
        write_denoising_plot(
            &d,
            &sig,
            &[0.005, 0.1, 0.3],
            &[0.007, 0.15, 0.29],
            "Gaussian fit",
        )?;
        assert!(d.metadata().map(|m| m.len() > 1000).unwrap_or(false));
        // Nothing positive to draw for the model is an error, not an empty picture.
        assert!(write_denoising_plot(&d, &sig, &[f64::NAN; 3], &[0.1; 3], "x").is_err());
        assert!(dir
            .path()
            .join("l.png")
            .metadata()
            .map(|m| m.len() > 1000)
            .unwrap_or(false));
        let e = write_scatter(&dir.path().join("missing/s.png"), s.view(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing/s.png"), "{e}");
        Ok(())
    }
}
