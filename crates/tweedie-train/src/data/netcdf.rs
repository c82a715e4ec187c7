//! NetCDF input (`[data] type = "netcdf"`) and output (samples in physical units).
//!
//! Each listed variable becomes a channel: a variable of dimensions [sample_dim, y, x]
//! (sample dimension first, usually `time`) gives one [y, x] field per sample. Files of a glob
//! are concatenated along the sample dimension in path order. Values are normalised per
//! variable, (v − mean)/std with mean and std over the training split, and those statistics,
//! names, units and coordinates travel with the model ([`NetcdfMeta`], JSON in the checkpoint's
//! metadata) so samples are written back in physical units with the training data's
//! coordinates. CF packing (`scale_factor`, `add_offset`) is undone on reading; `_FillValue`,
//! `missing_value` and NaN are missing values, refused unless `missing = "mask"` declares them
//! a fixed mask (e.g. land in a sea-surface field).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::{split_every, Dataset};
use crate::error::{Result, TrainError};
use tweedie_core::Invalid;

/// Fill value written for masked points (netCDF's default fill for floats).
pub const FILL_F32: f32 = 9.969_21e36;

/// How missing values (NaN, `_FillValue`, `missing_value`) are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Any missing value is an error naming the variable.
    #[default]
    Error,
    /// Points missing in every sample form a fixed mask: 0 (the mean) in training, fill
    /// values in written samples. Missing values that move between samples are an error.
    Mask,
}

fn default_sample_dim() -> String {
    "time".into()
}

fn default_every() -> usize {
    10
}

/// `[data] type = "netcdf"`: file or glob, variables (channels), sample dimension, slicing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetcdfConfig {
    /// A .nc file or a glob of files (`data/era5_*.nc`), concatenated in path order.
    pub path: String,
    /// Variables that become channels, in channel order; each has dimensions [sample, y, x].
    pub variables: Vec<String>,
    /// Name of the sample dimension (first dimension of every variable).
    #[serde(default = "default_sample_dim")]
    pub sample_dim: String,
    /// Half-open index ranges per dimension name, `{ time = [0, 100], lat = [0, 24] }`; the
    /// sample-dimension range indexes the concatenation of all files.
    #[serde(default)]
    pub slice: BTreeMap<String, [usize; 2]>,
    /// What to do with missing values.
    #[serde(default)]
    pub missing: Missing,
    /// Every `held_out_every`-th sample is held out (0 = none).
    #[serde(default = "default_every")]
    pub held_out_every: usize,
}

/// A coordinate variable of a grid dimension: values and CF attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coord {
    /// Coordinate values along the (sliced) dimension.
    pub values: Vec<f64>,
    /// String attributes copied to the output (`units`, `long_name`, `standard_name`, `axis`).
    pub attrs: BTreeMap<String, String>,
}

/// One variable (channel): its name, CF attributes and the training split's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarMeta {
    /// Variable name in the file.
    pub name: String,
    /// String attributes copied to the output (`units`, `long_name`, `standard_name`).
    pub attrs: BTreeMap<String, String>,
    /// Mean over the training split (physical units).
    pub mean: f64,
    /// Standard deviation over the training split (physical units).
    pub std: f64,
    /// Row-major [y, x] mask of points missing in every sample (`missing = "mask"`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Vec<bool>>,
}

/// What a model needs to write its samples back as NetCDF in physical units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetcdfMeta {
    /// Names of the grid dimensions [y, x].
    pub dims: [String; 2],
    /// Grid size [height, width].
    pub grid: [usize; 2],
    /// Coordinate variables of the grid dimensions, where the files have them.
    pub coords: [Option<Coord>; 2],
    /// One entry per channel.
    pub variables: Vec<VarMeta>,
}

/// Checkpoint metadata key under which [`NetcdfMeta`] is stored (JSON).
pub const META_KEY: &str = "tweedie.data.netcdf";

impl NetcdfMeta {
    /// Physical values v = mean + std·x of normalised samples [N, C·H·W]; masked points → NaN.
    pub fn to_physical(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let hw = self.grid[0] * self.grid[1];
        let c = self.variables.len();
        if x.ncols() != c * hw {
            return Err(TrainError::Data(format!(
                "samples have {} values each, the NetCDF variables {:?} on a {}×{} grid need {}",
                x.ncols(),
                self.variables.iter().map(|v| &v.name).collect::<Vec<_>>(),
                self.grid[0],
                self.grid[1],
                c * hw
            )));
        }
        let mut out = x.to_owned();
        for mut row in out.rows_mut() {
            for (k, v) in self.variables.iter().enumerate() {
                for p in 0..hw {
                    let masked = v.mask.as_ref().is_some_and(|m| m[p]);
                    let e = &mut row[k * hw + p];
                    *e = if masked {
                        f32::NAN
                    } else {
                        (v.mean + v.std * f64::from(*e)) as f32
                    };
                }
            }
        }
        Ok(out)
    }
}

fn nc_err(path: &Path, what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Data(format!("{}: {what}: {e}", path.display()))
}

/// The files named by `pattern`: one path, or the sorted matches of a glob.
fn expand(pattern: &str) -> Result<Vec<PathBuf>> {
    if !pattern.contains(['*', '?', '[']) {
        let p = PathBuf::from(pattern);
        if !p.is_file() {
            return Err(TrainError::Data(format!(
                "data.path: no NetCDF file {pattern}"
            )));
        }
        return Ok(vec![p]);
    }
    let paths = glob::glob(pattern)
        .map_err(|e| TrainError::invalid("data.path", pattern, e.to_string()))?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TrainError::Data(format!(
            "data.path: no file matches {pattern}"
        )));
    }
    Ok(files)
}

/// The value of attribute `name` of `v`, if it has one. Looks the name up among the
/// attributes first: asking libnetcdf for an absent attribute makes HDF5 print its error stack.
fn attr(v: &netcdf::Variable, name: &str) -> Option<netcdf::AttributeValue> {
    v.attributes()
        .find(|a| a.name() == name)
        .and_then(|a| a.value().ok())
}

fn attr_f64(v: &netcdf::Variable, name: &str) -> Option<f64> {
    use netcdf::AttributeValue as A;
    match attr(v, name)? {
        A::Double(x) => Some(x),
        A::Float(x) => Some(f64::from(x)),
        A::Int(x) => Some(f64::from(x)),
        A::Short(x) => Some(f64::from(x)),
        A::Schar(x) => Some(f64::from(x)),
        A::Uchar(x) => Some(f64::from(x)),
        A::Ushort(x) => Some(f64::from(x)),
        A::Uint(x) => Some(f64::from(x)),
        A::Longlong(x) => Some(x as f64),
        A::Ulonglong(x) => Some(x as f64),
        A::Doubles(x) => x.first().copied(),
        A::Floats(x) => x.first().map(|&v| f64::from(v)),
        _ => None,
    }
}

fn string_attrs(v: &netcdf::Variable, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|&k| match attr(v, k)? {
            netcdf::AttributeValue::Str(s) => Some((k.to_string(), s)),
            _ => None,
        })
        .collect()
}

const VAR_ATTRS: &[&str] = &["units", "long_name", "standard_name"];
const COORD_ATTRS: &[&str] = &["units", "long_name", "standard_name", "axis"];

/// Half-open range of a dimension of length `len` after `slice` (whole when absent).
fn range_of(cfg: &NetcdfConfig, dim: &str, len: usize) -> Result<(usize, usize)> {
    match cfg.slice.get(dim) {
        None => Ok((0, len)),
        Some(&[a, b]) if a < b && b <= len => Ok((a, b)),
        Some(&[a, b]) => Err(TrainError::invalid(
            &format!("data.slice.{dim}"),
            format!("[{a}, {b}]"),
            format!("need start < stop ≤ {len} (the length of `{dim}`)"),
        )),
    }
}

/// One variable of one file: dimension names, grid and values (NaN where missing).
struct Raw {
    dims: [String; 3],
    shape: [usize; 3],
    values: Vec<f64>,
}

fn read_var(path: &Path, file: &netcdf::File, name: &str, sample_dim: &str) -> Result<Raw> {
    let Some(v) = file.variable(name) else {
        let have: Vec<String> = file.variables().map(|v| v.name()).collect();
        return Err(TrainError::Data(format!(
            "{}: no variable `{name}` (the file has: {})",
            path.display(),
            have.join(", ")
        )));
    };
    let dims: Vec<String> = v.dimensions().iter().map(|d| d.name()).collect();
    let lens: Vec<usize> = v.dimensions().iter().map(|d| d.len()).collect();
    if !dims.iter().any(|d| d == sample_dim) {
        return Err(TrainError::Data(format!(
            "{}: variable `{name}` has no dimension `{sample_dim}` (data.sample_dim); its \
             dimensions are [{}]",
            path.display(),
            dims.join(", ")
        )));
    }
    if dims.len() != 3 || dims[0] != sample_dim {
        return Err(TrainError::Data(format!(
            "{}: variable `{name}` has dimensions [{}]; expected [{sample_dim}, y, x] with the \
             sample dimension first",
            path.display(),
            dims.join(", ")
        )));
    }
    let raw: Vec<f64> = v
        .get_values::<f64, _>(..)
        .map_err(|e| nc_err(path, &format!("reading `{name}`"), e))?;
    let fill = attr_f64(&v, "_FillValue");
    let missing = attr_f64(&v, "missing_value");
    let scale = attr_f64(&v, "scale_factor").unwrap_or(1.0);
    let offset = attr_f64(&v, "add_offset").unwrap_or(0.0);
    let values = raw
        .into_iter()
        .map(|r| {
            if r.is_nan() || Some(r) == fill || Some(r) == missing {
                f64::NAN
            } else {
                r * scale + offset
            }
        })
        .collect();
    Ok(Raw {
        dims: [dims[0].clone(), dims[1].clone(), dims[2].clone()],
        shape: [lens[0], lens[1], lens[2]],
        values,
    })
}

fn read_coord(file: &netcdf::File, dim: &str, (a, b): (usize, usize)) -> Option<Coord> {
    let v = file.variable(dim)?;
    if v.dimensions().len() != 1 {
        return None;
    }
    let vals: Vec<f64> = v.get_values::<f64, _>(..).ok()?;
    Some(Coord {
        values: vals.get(a..b)?.to_vec(),
        attrs: string_attrs(&v, COORD_ATTRS),
    })
}

/// Reads, checks, splits and normalises a NetCDF data set: (train, held-out, metadata).
pub fn load(cfg: &NetcdfConfig) -> Result<(Dataset, Dataset, NetcdfMeta)> {
    if cfg.variables.is_empty() {
        return Err(TrainError::invalid(
            "data.variables",
            "[]",
            "list at least one variable",
        ));
    }
    let files = expand(&cfg.path)?;
    let c = cfg.variables.len();
    // Per variable: the concatenated values [T_total, H, W] before slicing the grid.
    let mut per_var: Vec<Vec<f64>> = vec![Vec::new(); c];
    let mut grid: Option<(PathBuf, [String; 3], [usize; 2])> = None;
    let mut total = 0usize;
    let mut attrs: Vec<BTreeMap<String, String>> = Vec::new();
    let mut coords: [Option<Coord>; 2] = [None, None];
    for path in &files {
        let file = netcdf::open(path).map_err(|e| nc_err(path, "cannot open as NetCDF", e))?;
        let mut t_file = None;
        for (k, name) in cfg.variables.iter().enumerate() {
            let raw = read_var(path, &file, name, &cfg.sample_dim)?;
            let g = [raw.shape[1], raw.shape[2]];
            match &grid {
                None => {
                    for d in cfg.slice.keys() {
                        if !raw.dims.contains(d) {
                            return Err(TrainError::Data(format!(
                                "data.slice: no dimension `{d}` (the variables' dimensions are [{}])",
                                raw.dims.join(", ")
                            )));
                        }
                    }
                    let ry = range_of(cfg, &raw.dims[1], g[0])?;
                    let rx = range_of(cfg, &raw.dims[2], g[1])?;
                    coords = [
                        read_coord(&file, &raw.dims[1], ry),
                        read_coord(&file, &raw.dims[2], rx),
                    ];
                    grid = Some((path.clone(), raw.dims.clone(), g));
                }
                Some((p0, d0, g0)) => {
                    if (&raw.dims[1..], g) != (&d0[1..], *g0) {
                        return Err(TrainError::Data(format!(
                            "mismatched grids: `{}` in {} is {}×{} on [{}], but {} has {}×{} on [{}]",
                            name,
                            path.display(),
                            g[0],
                            g[1],
                            raw.dims[1..].join(", "),
                            p0.display(),
                            g0[0],
                            g0[1],
                            d0[1..].join(", ")
                        )));
                    }
                }
            }
            match t_file {
                None => t_file = Some(raw.shape[0]),
                Some(t) if t != raw.shape[0] => {
                    return Err(TrainError::Data(format!(
                        "{}: `{name}` has {} samples along `{}`, `{}` has {t}",
                        path.display(),
                        raw.shape[0],
                        cfg.sample_dim,
                        cfg.variables[0]
                    )))
                }
                Some(_) => {}
            }
            if attrs.len() < c {
                if let Some(v) = file.variable(name) {
                    attrs.push(string_attrs(&v, VAR_ATTRS));
                }
            }
            per_var[k].extend(raw.values);
        }
        total += t_file.unwrap_or(0);
    }
    let Some((_, dims, [h0, w0])) = grid else {
        return Err(TrainError::Data("data.path: no files".into()));
    };
    let (t0, t1) = range_of(cfg, &cfg.sample_dim, total)?;
    let (y0, y1) = range_of(cfg, &dims[1], h0)?;
    let (x0, x1) = range_of(cfg, &dims[2], w0)?;
    let (n, h, w) = (t1 - t0, y1 - y0, x1 - x0);
    let hw = h * w;
    // [N, C·H·W] in physical units, NaN where missing.
    let mut x = Array2::<f64>::zeros((n, c * hw));
    for (k, vals) in per_var.iter().enumerate() {
        for i in 0..n {
            for r in 0..h {
                for col in 0..w {
                    let src = ((t0 + i) * h0 + y0 + r) * w0 + x0 + col;
                    x[[i, k * hw + r * w + col]] = vals[src];
                }
            }
        }
    }
    // Missing values: refuse, or a fixed mask per variable.
    let mut masks: Vec<Option<Vec<bool>>> = vec![None; c];
    for (k, name) in cfg.variables.iter().enumerate() {
        let block = x.slice(ndarray::s![.., k * hw..(k + 1) * hw]);
        let nmiss = block.iter().filter(|v| v.is_nan()).count();
        if nmiss == 0 {
            continue;
        }
        if nmiss == block.len() {
            return Err(TrainError::Data(format!(
                "variable `{name}` is missing (NaN or _FillValue) everywhere in the selected data"
            )));
        }
        if cfg.missing == Missing::Error {
            return Err(TrainError::Data(format!(
                "variable `{name}` has {nmiss} missing values (NaN, _FillValue or \
                 missing_value); set data.missing = \"mask\" if they are a fixed mask such as land"
            )));
        }
        let m: Vec<bool> = block.row(0).iter().map(|v| v.is_nan()).collect();
        if let Some((i, p)) = block.rows().into_iter().enumerate().find_map(|(i, row)| {
            row.iter()
                .zip(&m)
                .position(|(v, &mm)| v.is_nan() != mm)
                .map(|p| (i, p))
        }) {
            return Err(TrainError::Data(format!(
                "variable `{name}`: missing values move between samples (sample {i}, point \
                 ({}, {})); data.missing = \"mask\" needs the same missing points in every sample",
                p / w,
                p % w
            )));
        }
        masks[k] = Some(m);
    }
    let all = Dataset::new(
        x.mapv(|v| if v.is_nan() { 0.0 } else { v as f32 }),
        vec![c, h, w],
        None,
    )?;
    let (mut train, mut held_out) = split_every(all, cfg.held_out_every)?;
    // Per-variable statistics over the training split's unmasked points, in f64.
    let mut variables = Vec::with_capacity(c);
    for (k, name) in cfg.variables.iter().enumerate() {
        let keep = |p: usize| masks[k].as_ref().is_none_or(|m| !m[p]);
        let (mut s, mut s2, mut cnt) = (0.0f64, 0.0f64, 0usize);
        for row in train.x.rows() {
            for p in (0..hw).filter(|&p| keep(p)) {
                let v = f64::from(row[k * hw + p]);
                s += v;
                s2 += v * v;
                cnt += 1;
            }
        }
        let mean = s / cnt.max(1) as f64;
        let std = (s2 / cnt.max(1) as f64 - mean * mean).max(0.0).sqrt();
        if !(std > 0.0 && std.is_finite()) {
            return Err(TrainError::Data(format!(
                "variable `{name}` is constant over the training split (std 0): it cannot be \
                 normalised"
            )));
        }
        for d in [&mut train, &mut held_out] {
            for mut row in d.x.rows_mut() {
                for p in 0..hw {
                    let e = &mut row[k * hw + p];
                    *e = if keep(p) {
                        ((f64::from(*e) - mean) / std) as f32
                    } else {
                        0.0
                    };
                }
            }
        }
        variables.push(VarMeta {
            name: name.clone(),
            attrs: attrs.get(k).cloned().unwrap_or_default(),
            mean,
            std,
            mask: masks[k].clone(),
        });
    }
    let meta = NetcdfMeta {
        dims: [dims[1].clone(), dims[2].clone()],
        grid: [h, w],
        coords,
        variables,
    };
    Ok((train, held_out, meta))
}

/// Writes samples (normalised rows [N, C·H·W]) to `path` as NetCDF in physical units:
/// variables [sample, y, x] with the training data's names, attributes and coordinates;
/// masked points hold [`FILL_F32`]. Written to a temporary file, then renamed.
pub fn write_samples(path: &Path, x: ArrayView2<f32>, meta: &NetcdfMeta) -> Result<()> {
    let phys = meta.to_physical(x)?;
    let [h, w] = meta.grid;
    let hw = h * w;
    let n = phys.nrows();
    let tmp = path.with_extension("nc.tmp");
    let werr = |e: netcdf::Error| nc_err(path, "cannot write", e);
    {
        let mut f = netcdf::create(&tmp).map_err(werr)?;
        f.add_dimension("sample", n).map_err(werr)?;
        for (d, len) in meta.dims.iter().zip([h, w]) {
            f.add_dimension(d, len).map_err(werr)?;
        }
        for (d, c) in meta.dims.iter().zip(&meta.coords) {
            if let Some(c) = c {
                let mut v = f.add_variable::<f64>(d, &[d.as_str()]).map_err(werr)?;
                for (k, a) in &c.attrs {
                    v.put_attribute(k, a.as_str()).map_err(werr)?;
                }
                v.put_values(&c.values, ..).map_err(werr)?;
            }
        }
        let vdims = ["sample", meta.dims[0].as_str(), meta.dims[1].as_str()];
        for (k, vm) in meta.variables.iter().enumerate() {
            let mut v = f.add_variable::<f32>(&vm.name, &vdims).map_err(werr)?;
            v.set_fill_value(FILL_F32).map_err(werr)?;
            for (a, s) in &vm.attrs {
                v.put_attribute(a, s.as_str()).map_err(werr)?;
            }
            let mut vals = Vec::with_capacity(n * hw);
            for row in phys.rows() {
                vals.extend(row.iter().skip(k * hw).take(hw).map(|&v| {
                    if v.is_nan() {
                        FILL_F32
                    } else {
                        v
                    }
                }));
            }
            v.put_values(&vals, ..).map_err(werr)?;
        }
        f.add_attribute("source", "tweedie sample").map_err(werr)?;
        f.close().map_err(werr)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

/// Evaluation of samples of NetCDF data (normalised rows [N, C·H·W]) against the held-out
/// split: per variable, the radially averaged spectrum's max |log(generated/held-out)|, mean
/// and std; per pair of variables, the pixel correlation. Appends a markdown section to `md`.
pub fn evaluate(
    x: ArrayView2<f32>,
    held_out: ArrayView2<f32>,
    meta: &NetcdfMeta,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<serde_json::Value> {
    use std::fmt::Write;
    let [h, w] = meta.grid;
    let hw = h * w;
    fn chan(a: ArrayView2<'_, f32>, k: usize, hw: usize) -> ArrayView2<'_, f32> {
        a.slice_move(ndarray::s![.., k * hw..(k + 1) * hw])
    }
    let _ = writeln!(md, "### NetCDF variables against the held-out data\n");
    let _ = writeln!(
        md,
        "| variable | spectrum max \\|log(gen/held-out)\\| | mean gen (held-out) | std gen (held-out) |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    let mut vars = Vec::new();
    for (k, v) in meta.variables.iter().enumerate() {
        let (g, r) = (chan(x, k, hw), chan(held_out, k, hw));
        let sg = super::fields::radial_spectrum(g, h, w)?;
        let sr = super::fields::radial_spectrum(r, h, w)?;
        let worst = sg
            .iter()
            .zip(&sr)
            .filter(|(_, r)| **r > 0.0)
            .map(|(g, r)| (g / r).ln().abs())
            .fold(0.0f64, f64::max);
        // Physical units: mean + std·(normalised moment).
        let m = |a: ArrayView2<f32>| {
            a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len().max(1) as f64
        };
        let sd = |a: ArrayView2<f32>| {
            let mu = m(a);
            (a.iter().map(|&v| (f64::from(v) - mu).powi(2)).sum::<f64>() / a.len().max(1) as f64)
                .sqrt()
        };
        let (mg, mr) = (v.mean + v.std * m(g), v.mean + v.std * m(r));
        let (dg, dr) = (v.std * sd(g), v.std * sd(r));
        let units = v.attrs.get("units").cloned().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {worst:.3} | {mg:.4} ({mr:.4}) {units} | {dg:.4} ({dr:.4}) {units} |",
            v.name
        );
        head.push(format!(
            "{}: spectrum max |log ratio| {worst:.3} vs held-out",
            v.name
        ));
        vars.push(
            serde_json::json!({"name": v.name, "spectrum_generated": sg, "spectrum_held_out": sr,
            "max_abs_log_ratio": worst, "mean": [mg, mr], "std": [dg, dr]}),
        );
    }
    let mut pairs = Vec::new();
    for a in 0..meta.variables.len() {
        for b in a + 1..meta.variables.len() {
            let cg = super::fields::correlation(chan(x, a, hw), chan(x, b, hw));
            let cr = super::fields::correlation(chan(held_out, a, hw), chan(held_out, b, hw));
            let (na, nb) = (&meta.variables[a].name, &meta.variables[b].name);
            let _ = writeln!(
                md,
                "\ncorrelation {na}–{nb}: generated {cg:.3}, held-out {cr:.3}"
            );
            head.push(format!("correlation {na}–{nb}: {cg:.3} (held-out {cr:.3})"));
            pairs.push(serde_json::json!({"a": na, "b": nb, "generated": cg, "held_out": cr}));
        }
    }
    let _ = writeln!(md);
    Ok(serde_json::json!({"netcdf": {"variables": vars, "correlations": pairs}}))
}

/// Writes variables [time, lat, lon] (rows [N, H·W] in physical units, with `units`) and
/// lat/lon coordinate variables to a NetCDF file: how synthetic data sets become NetCDF.
pub fn write_grid_file(
    path: &Path,
    lat: &[f64],
    lon: &[f64],
    vars: &[(&str, &str, ArrayView2<f32>)],
) -> Result<()> {
    let (h, w) = (lat.len(), lon.len());
    let n = vars.first().map_or(0, |v| v.2.nrows());
    if let Some((name, _, x)) = vars.iter().find(|v| v.2.dim() != (n, h * w)) {
        return Err(TrainError::Data(format!(
            "`{name}` is {:?}, expected [{n}, {}] for a {h}×{w} grid",
            x.dim(),
            h * w
        )));
    }
    let werr = |e: netcdf::Error| nc_err(path, "cannot write", e);
    let tmp = path.with_extension("nc.tmp");
    {
        let mut f = netcdf::create(&tmp).map_err(werr)?;
        f.add_dimension("time", n).map_err(werr)?;
        f.add_dimension("lat", h).map_err(werr)?;
        f.add_dimension("lon", w).map_err(werr)?;
        let time: Vec<f64> = (0..n).map(|i| i as f64).collect();
        for (d, vals, units) in [
            ("time", &time[..], "days since 2000-01-01"),
            ("lat", lat, "degrees_north"),
            ("lon", lon, "degrees_east"),
        ] {
            let mut v = f.add_variable::<f64>(d, &[d]).map_err(werr)?;
            v.put_attribute("units", units).map_err(werr)?;
            v.put_values(vals, ..).map_err(werr)?;
        }
        for (name, units, x) in vars {
            let mut v = f
                .add_variable::<f32>(name, &["time", "lat", "lon"])
                .map_err(werr)?;
            v.put_attribute("units", *units).map_err(werr)?;
            let vals: Vec<f32> = x.iter().copied().collect();
            v.put_values(&vals, ..).map_err(werr)?;
        }
        f.close().map_err(werr)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fixture with the netcdf crate itself: variables [dims] with `units`, f64 values,
    /// and lat/lon coordinate variables.
    fn write_nc(path: &Path, dims: [(&str, usize); 3], vars: &[(&str, &str, Vec<f64>)]) {
        let mut f = netcdf::create(path).unwrap();
        for (d, n) in dims {
            f.add_dimension(d, n).unwrap();
        }
        for (d, n) in &dims[1..] {
            let mut v = f.add_variable::<f64>(d, &[d]).unwrap();
            v.put_attribute("units", format!("{d}_units").as_str())
                .unwrap();
            let vals: Vec<f64> = (0..*n).map(|i| 10.0 * i as f64).collect();
            v.put_values(&vals, ..).unwrap();
        }
        let names = [dims[0].0, dims[1].0, dims[2].0];
        for (name, units, vals) in vars {
            let mut v = f.add_variable::<f64>(name, &names).unwrap();
            v.put_attribute("units", *units).unwrap();
            v.set_fill_value(-999.0f64).unwrap();
            v.put_values(vals, ..).unwrap();
        }
        f.close().unwrap();
    }

    fn field(n: usize, h: usize, w: usize, mean: f64, amp: f64, seed: f64) -> Vec<f64> {
        (0..n * h * w)
            .map(|i| mean + amp * ((i as f64 * 0.37 + seed).sin() + 0.3 * (i as f64 * 1.3).cos()))
            .collect()
    }

    fn cfg(path: &Path, vars: &[&str]) -> NetcdfConfig {
        NetcdfConfig {
            path: path.display().to_string(),
            variables: vars.iter().map(|s| s.to_string()).collect(),
            sample_dim: "time".into(),
            slice: BTreeMap::new(),
            missing: Missing::Error,
            held_out_every: 5,
        }
    }

    const DIMS: [(&str, usize); 3] = [("time", 20), ("lat", 6), ("lon", 8)];

    #[test]
    fn reads_normalises_and_writes_back_in_physical_units() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let p = dir.path().join("a.nc");
        let t2m = field(20, 6, 8, 280.0, 5.0, 0.0);
        let msl = field(20, 6, 8, 101_000.0, 800.0, 1.0);
        write_nc(&p, DIMS, &[("t2m", "K", t2m.clone()), ("msl", "Pa", msl)]);
        let (tr, ho, meta) = load(&cfg(&p, &["t2m", "msl"]))?;
        assert_eq!(tr.shape, vec![2, 6, 8]);
        assert_eq!((tr.len(), ho.len()), (16, 4));
        // The mean and std are those of the training split (samples i mod 5 ≠ 4), in f64.
        let train_vals: Vec<f64> = (0..20)
            .filter(|i| i % 5 != 4)
            .flat_map(|i| t2m[i * 48..(i + 1) * 48].to_vec())
            .collect();
        let m = train_vals.iter().sum::<f64>() / train_vals.len() as f64;
        let sd = (train_vals.iter().map(|v| (v - m).powi(2)).sum::<f64>()
            / train_vals.len() as f64)
            .sqrt();
        let v0 = &meta.variables[0];
        assert!(
            (v0.mean - m).abs() < 1e-3 && (v0.std / sd - 1.0).abs() < 1e-6,
            "{v0:?}"
        );
        assert_eq!(v0.attrs.get("units").map(String::as_str), Some("K"));
        assert_eq!(meta.dims, ["lat".to_string(), "lon".to_string()]);
        let lon = meta.coords[1].as_ref().map(|c| c.values.clone());
        assert_eq!(lon, Some((0..8).map(|i| 10.0 * i as f64).collect()));
        // Training channels are standardised.
        let ch0: Vec<f64> =
            tr.x.rows()
                .into_iter()
                .flat_map(|r| r.iter().take(48).map(|&v| f64::from(v)).collect::<Vec<_>>())
                .collect();
        let mean0 = ch0.iter().sum::<f64>() / ch0.len() as f64;
        let var0 = ch0.iter().map(|v| v * v).sum::<f64>() / ch0.len() as f64;
        assert!(
            mean0.abs() < 1e-5 && (var0 - 1.0).abs() < 1e-4,
            "{mean0} {var0}"
        );

        // Written back: names, units, coordinates and physical values.
        let out = dir.path().join("s.nc");
        write_samples(&out, tr.x.view(), &meta)?;
        let f = netcdf::open(&out).map_err(|e| nc_err(&out, "open", e))?;
        let v = f
            .variable("t2m")
            .ok_or_else(|| TrainError::Data("no t2m".into()))?;
        let dims: Vec<String> = v.dimensions().iter().map(|d| d.name()).collect();
        assert_eq!(dims, ["sample", "lat", "lon"]);
        assert_eq!(
            string_attrs(&v, &["units"])
                .get("units")
                .map(String::as_str),
            Some("K")
        );
        let back: Vec<f32> = v.get_values(..).map_err(|e| nc_err(&out, "read", e))?;
        // Sample 0 is file sample 0: values agree to f32 rounding.
        for (b, t) in back.iter().zip(&t2m).take(48) {
            assert!((f64::from(*b) - t).abs() < 1e-3 * t.abs(), "{b} vs {t}");
        }
        let lat = f
            .variable("lat")
            .ok_or_else(|| TrainError::Data("no lat".into()))?;
        assert_eq!(
            string_attrs(&lat, &["units"])
                .get("units")
                .map(String::as_str),
            Some("lat_units")
        );
        Ok(())
    }

    #[test]
    fn globs_concatenate_in_path_order_and_slices_select() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let a = field(20, 6, 8, 1.0, 1.0, 0.0);
        let b = field(20, 6, 8, 5.0, 1.0, 2.0);
        write_nc(&dir.path().join("x_1.nc"), DIMS, &[("u", "m s-1", a)]);
        write_nc(
            &dir.path().join("x_2.nc"),
            DIMS,
            &[("u", "m s-1", b.clone())],
        );
        let mut c = cfg(&dir.path().join("x_*.nc"), &["u"]);
        c.held_out_every = 0;
        c.slice.insert("time".into(), [20, 40]);
        c.slice.insert("lat".into(), [1, 5]);
        let (tr, _, meta) = load(&c)?;
        assert_eq!((tr.len(), tr.shape.clone()), (20, vec![1, 4, 8]));
        // The first selected sample is the second file's sample 0, rows 1..5.
        let v = meta.to_physical(tr.x.view())?;
        assert!(
            (f64::from(v[[0, 0]]) - b[8]).abs() < 1e-4,
            "{} vs {}",
            v[[0, 0]],
            b[8]
        );
        assert_eq!(
            meta.coords[0].as_ref().map(|c| c.values.clone()),
            Some(vec![10.0, 20.0, 30.0, 40.0])
        );
        c.slice.insert("level".into(), [0, 1]);
        let e = load(&c).unwrap_err().to_string();
        assert!(e.contains("data.slice") && e.contains("`level`"), "{e}");
        c.slice.remove("level");
        c.slice.insert("lat".into(), [3, 9]);
        let e = load(&c).unwrap_err().to_string();
        assert!(e.contains("data.slice.lat") && e.contains("[3, 9]"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_input_is_a_clear_error_naming_it() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let p = dir.path().join("a.nc");
        let mut nan = field(20, 6, 8, 0.0, 1.0, 0.0);
        nan[3] = f64::NAN;
        let mut fixed = field(20, 6, 8, 0.0, 1.0, 0.0);
        for t in 0..20 {
            fixed[t * 48 + 5] = -999.0; // _FillValue at the same point in every sample
        }
        write_nc(
            &p,
            DIMS,
            &[
                ("t", "K", field(20, 6, 8, 0.0, 1.0, 0.0)),
                ("gone", "K", vec![f64::NAN; 960]),
                ("holes", "K", nan),
                ("sst", "K", fixed),
            ],
        );
        let err = |c: &NetcdfConfig| load(c).map(|_| ()).unwrap_err().to_string();
        let e = err(&cfg(&p, &["t", "nope"]));
        assert!(
            e.contains("no variable `nope`") && e.contains("holes"),
            "{e}"
        );
        let mut c = cfg(&p, &["t"]);
        c.sample_dim = "step".into();
        let e = err(&c);
        assert!(
            e.contains("no dimension `step`") && e.contains("time, lat, lon"),
            "{e}"
        );
        let e = err(&cfg(&p, &["gone"]));
        assert!(e.contains("`gone`") && e.contains("everywhere"), "{e}");
        let e = err(&cfg(&p, &["holes"]));
        assert!(
            e.contains("`holes`") && e.contains("1 missing") && e.contains("mask"),
            "{e}"
        );
        let e = err(&cfg(&p, &["sst"]));
        assert!(e.contains("`sst`") && e.contains("20 missing"), "{e}");
        // A fixed mask is accepted with missing = "mask" and comes back as fill values.
        let mut c = cfg(&p, &["t", "sst"]);
        c.missing = Missing::Mask;
        let (tr, _, meta) = load(&c)?;
        let mask = meta.variables[1].mask.clone().unwrap_or_default();
        assert_eq!(mask.iter().filter(|&&m| m).count(), 1);
        assert!(mask[5] && tr.x[[0, 48 + 5]] == 0.0);
        let out = dir.path().join("m.nc");
        write_samples(&out, tr.x.view(), &meta)?;
        let f = netcdf::open(&out).map_err(|e| nc_err(&out, "open", e))?;
        let v = f
            .variable("sst")
            .ok_or_else(|| TrainError::Data("no sst".into()))?;
        let back: Vec<f32> = v.get_values(..).map_err(|e| nc_err(&out, "read", e))?;
        assert_eq!(back[5], FILL_F32);
        // Missing values that move are refused even with a mask.
        let mut c = cfg(&p, &["holes"]);
        c.missing = Missing::Mask;
        let e = err(&c);
        assert!(e.contains("move between samples"), "{e}");
        // Mismatched grids across files of a glob.
        let q = dir.path().join("b.nc");
        write_nc(
            &q,
            [("time", 4), ("lat", 6), ("lon", 9)],
            &[("t", "K", field(4, 6, 9, 0.0, 1.0, 0.0))],
        );
        let e = err(&cfg(&dir.path().join("?.nc"), &["t"]));
        assert!(
            e.contains("mismatched grids") && e.contains("6×9") && e.contains("6×8"),
            "{e}"
        );
        // A missing file, a glob without matches, a file that is not NetCDF.
        let e = err(&cfg(&dir.path().join("none.nc"), &["t"]));
        assert!(e.contains("none.nc"), "{e}");
        let e = err(&cfg(&dir.path().join("z*.nc"), &["t"]));
        assert!(e.contains("no file matches"), "{e}");
        let junk = dir.path().join("junk.nc");
        std::fs::write(&junk, b"not netcdf").map_err(|e| TrainError::io(&junk, e))?;
        let e = err(&cfg(&junk, &["t"]));
        assert!(e.contains("junk.nc") && e.contains("cannot open"), "{e}");
        Ok(())
    }
}
