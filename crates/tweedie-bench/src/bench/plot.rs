//! Log-log line plots (error vs NFE) drawn with plotters into an RGB buffer and written as PNG.
//!
//! Text goes through the workspace's one text path, plotters' `ab_glyph` renderer with the
//! font that [`tweedie_train::plot::ensure_font`] registers (as the training plots do).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use tweedie_train::plot::{ensure_font, FONT_FAMILY};

/// One line of a panel: (x, y) points, drawn in order; non-positive or non-finite points are skipped.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Lines with the same key share a colour (a method and its reference implementations).
    pub color_key: String,
    pub marker: Marker,
}

/// Marker and line weight of a series: ours solid with dots, references thin and hollow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Dot,
    Square,
    Diamond,
}

/// One log-log chart.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
];

const PANEL_W: u32 = 640;
const LEGEND_W: u32 = 360;
const HEIGHT: u32 = 620;
/// Font size of every text in pixels.
const FONT_PX: f64 = 17.0;

/// Colour of the `i`-th distinct label; lines that share a label share a colour across panels.
fn color_of(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Writes the panels side by side with a shared legend to `path` (atomically).
pub fn write_png(path: &Path, panels: &[Panel]) -> Result<()> {
    ensure_font()?;
    let mut keys: Vec<String> = Vec::new();
    let mut labels: Vec<Legend> = Vec::new();
    for s in panels.iter().flat_map(|p| p.series.iter()) {
        if !keys.contains(&s.color_key) {
            keys.push(s.color_key.clone());
        }
        if !labels.iter().any(|l| l.label == s.label) {
            let color = keys.iter().position(|k| k == &s.color_key).unwrap_or(0);
            labels.push(Legend {
                label: s.label.clone(),
                color,
                marker: s.marker,
            });
        }
    }
    let legend_rows = labels.len() as u32;
    let height = HEIGHT.max(40 + legend_rows * 22);
    let width = PANEL_W * panels.len().max(1) as u32 + LEGEND_W;
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        for (i, panel) in panels.iter().enumerate() {
            let x0 = i as i32 * PANEL_W as i32;
            draw_panel(&root, x0, panel, &labels, height)
                .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        }
        draw_legend(&root, (PANEL_W * panels.len() as u32) as i32 + 10, &labels)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    let tmp = path.with_extension("png.tmp");
    image::save_buffer_with_format(
        &tmp,
        &buf,
        width,
        height,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// One legend entry: label, palette index, marker.
struct Legend {
    label: String,
    color: usize,
    marker: Marker,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<
    (),
    DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>,
>;

fn style(color: &RGBColor) -> TextStyle<'static> {
    (FONT_FAMILY, FONT_PX).into_font().color(color)
}

/// Width in pixels of `s` as [`text`] draws it (0 if the font cannot measure it).
fn text_width(root: &Area, s: &str) -> i32 {
    root.estimate_text_size(s, &style(&BLACK))
        .map(|(w, _)| w as i32)
        .unwrap_or(0)
}

/// `s` with its top-left corner at (x, y).
fn text(root: &Area, s: &str, x: i32, y: i32, color: &RGBColor) -> DrawResult {
    root.draw(&Text::new(s.to_string(), (x, y), style(color)))
}

/// Text rotated by 90° (reading bottom to top), for the y-axis label.
fn text_vertical(root: &Area, s: &str, x: i32, y_bottom: i32, color: &RGBColor) -> DrawResult {
    let st = style(color).transform(FontTransform::Rotate270);
    root.draw(&Text::new(s.to_string(), (x, y_bottom), st))
}

/// Decades [10^a, 10^b] covering `lo..hi` (both > 0).
fn decades(lo: f64, hi: f64) -> (i32, i32) {
    let a = lo.log10().floor() as i32;
    let mut b = hi.log10().ceil() as i32;
    if b <= a {
        b = a + 1;
    }
    (a, b)
}

/// "1e-3" style label of 10^k.
fn decade_label(k: i32) -> String {
    format!("1e{k}")
}

fn draw_panel(root: &Area, x0: i32, panel: &Panel, labels: &[Legend], height: u32) -> DrawResult {
    let black = RGBColor(0, 0, 0);
    let grid = RGBColor(225, 225, 225);
    let (left, right, top, bottom) = (x0 + 95, x0 + PANEL_W as i32 - 20, 50, height as i32 - 70);
    text(root, &panel.title, x0 + 95, 15, &black)?;

    let pts: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
        .collect();
    if pts.is_empty() {
        return text(root, "no data", left + 40, (top + bottom) / 2, &black);
    }
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (ya, yb) = decades(ymin, ymax);
    // x: a 1-2-5 ladder is easier to read than decades for NFE 5..200.
    let (xlo, xhi) = (xmin / 1.15, xmax * 1.15);
    let (lxlo, lxhi) = (xlo.log10(), xhi.log10());
    let to_px = |x: f64, y: f64| -> (i32, i32) {
        let fx = (x.log10() - lxlo) / (lxhi - lxlo);
        let fy = (y.log10() - ya as f64) / (yb - ya) as f64;
        (
            left + (fx * (right - left) as f64).round() as i32,
            bottom - (fy * (bottom - top) as f64).round() as i32,
        )
    };

    // Grid and y ticks.
    for k in ya..=yb {
        let (_, py) = to_px(xlo, 10f64.powi(k));
        root.draw(&PathElement::new(
            vec![(left, py), (right, py)],
            grid.stroke_width(1),
        ))?;
        let lab = decade_label(k);
        text(
            root,
            &lab,
            left - 8 - text_width(root, &lab),
            py - 7,
            &black,
        )?;
        for m in 2..10 {
            let v = m as f64 * 10f64.powi(k);
            if k < yb {
                let (_, py) = to_px(xlo, v);
                root.draw(&PathElement::new(
                    vec![(left - 4, py), (left, py)],
                    black.stroke_width(1),
                ))?;
            }
        }
    }
    let mut xt = 10f64.powi(xlo.log10().floor() as i32);
    while xt <= xhi {
        for m in [1.0, 2.0, 5.0] {
            let v = xt * m;
            if v >= xlo && v <= xhi {
                let (px, _) = to_px(v, 10f64.powi(ya));
                root.draw(&PathElement::new(
                    vec![(px, top), (px, bottom)],
                    grid.stroke_width(1),
                ))?;
                let lab = if v >= 1.0 {
                    format!("{}", v.round() as i64)
                } else {
                    format!("{v}")
                };
                text(
                    root,
                    &lab,
                    px - text_width(root, &lab) / 2,
                    bottom + 8,
                    &black,
                )?;
            }
        }
        xt *= 10.0;
    }
    root.draw(&PathElement::new(
        vec![
            (left, top),
            (left, bottom),
            (right, bottom),
            (right, top),
            (left, top),
        ],
        black.stroke_width(1),
    ))?;
    let xl = &panel.x_label;
    text(
        root,
        xl,
        (left + right) / 2 - text_width(root, xl) / 2,
        bottom + 35,
        &black,
    )?;
    let yl = &panel.y_label;
    text_vertical(
        root,
        yl,
        x0 + 8,
        (top + bottom) / 2 + text_width(root, yl) / 2,
        &black,
    )?;

    for s in &panel.series {
        let ci = labels
            .iter()
            .find(|l| l.label == s.label)
            .map(|l| l.color)
            .unwrap_or(0);
        let color = color_of(ci);
        let line: Vec<(i32, i32)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
            .map(|&(x, y)| to_px(x, y))
            .collect();
        let width = if s.marker == Marker::Dot { 2 } else { 1 };
        root.draw(&PathElement::new(line.clone(), color.stroke_width(width)))?;
        for p in line {
            draw_marker(root, p, color, s.marker)?;
        }
    }
    Ok(())
}

fn draw_marker(root: &Area, (x, y): (i32, i32), color: RGBColor, marker: Marker) -> DrawResult {
    match marker {
        Marker::Dot => root.draw(&Circle::new((x, y), 4, color.filled())),
        Marker::Square => root.draw(&Rectangle::new(
            [(x - 5, y - 5), (x + 5, y + 5)],
            color.stroke_width(1),
        )),
        Marker::Diamond => root.draw(&PathElement::new(
            vec![(x, y - 7), (x + 7, y), (x, y + 7), (x - 7, y), (x, y - 7)],
            color.stroke_width(1),
        )),
    }
}

fn draw_legend(root: &Area, x0: i32, labels: &[Legend]) -> DrawResult {
    let black = RGBColor(0, 0, 0);
    for (i, l) in labels.iter().enumerate() {
        let y = 20 + i as i32 * 22;
        let color = color_of(l.color);
        let width = if l.marker == Marker::Dot { 2 } else { 1 };
        root.draw(&PathElement::new(
            vec![(x0, y + 7), (x0 + 30, y + 7)],
            color.stroke_width(width),
        ))?;
        draw_marker(root, (x0 + 15, y + 7), color, l.marker)?;
        text(root, &l.label, x0 + 40, y, &black)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decade_range_covers_data() {
        assert_eq!(decades(3e-4, 0.5), (-4, 0));
        assert_eq!(decades(1.0, 1.0), (0, 1));
    }

    #[test]
    fn png_has_the_series_colours_and_size() {
        let dir = std::env::temp_dir().join(format!("tweedie-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.png");
        let panel = Panel {
            title: "TEST".into(),
            x_label: "NFE".into(),
            y_label: "RMS ERROR".into(),
            series: vec![
                Series {
                    label: "a".into(),
                    points: vec![(5.0, 1.0), (10.0, 0.5), (100.0, 0.05)],
                    color_key: "a".into(),
                    marker: Marker::Dot,
                },
                Series {
                    label: "b".into(),
                    points: vec![(5.0, 0.1), (0.0, 1.0), (50.0, 1e-4)],
                    color_key: "b".into(),
                    marker: Marker::Square,
                },
            ],
        };
        write_png(&path, &[panel.clone(), panel]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * PANEL_W + LEGEND_W, HEIGHT));
        let count = |c: RGBColor| img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        // Both series were drawn (first two palette colours), and text is black.
        assert!(count(color_of(0)) > 100);
        assert!(count(color_of(1)) > 50);
        assert!(count(RGBColor(0, 0, 0)) > 500);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
