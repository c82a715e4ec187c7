//! The user's own data: a folder of PNG images, an .npy array, MNIST IDX files.
//!
//! Every loader returns pixels scaled to [−1, 1] (8-bit images: x/127.5 − 1) and the
//! per-sample shape [C, H, W]; float .npy arrays are taken as they are.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, IxDyn};

use crate::error::{Result, TrainError};

/// Images as rows of C·H·W values in [−1, 1], their shape, optional labels and class names.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub x: Array2<f32>,
    pub shape: Vec<usize>,
    pub labels: Option<Vec<i64>>,
    pub class_names: Option<Vec<String>>,
    /// 256 for 8-bit pixels (PNG, IDX, u8 .npy); None for float arrays, taken as they are.
    pub levels: Option<u32>,
}

/// Whether a folder entry is hidden (`.git`, `.DS_Store`, `.ipynb_checkpoints`): never data.
fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if !is_hidden(&p)
            && p.is_file()
            && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads a folder of PNGs. Either the folder itself holds the PNGs (unlabelled), or its
/// sub-folders do, one class each (sorted by name, label = its index); a folder with PNGs at
/// both levels is refused, since silently dropping either set would lose data. Hidden entries
/// (names starting with `.`) are ignored. All images must have one size; they are grey (C = 1)
/// unless any has colour, then RGB (C = 3). Alpha is dropped.
pub fn load_png_dir(dir: &Path) -> Result<Loaded> {
    if !dir.is_dir() {
        return Err(TrainError::Data(format!(
            "image folder {} does not exist or is not a folder",
            dir.display()
        )));
    }
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if p.is_dir() && !is_hidden(&p) {
            subdirs.push(p);
        }
    }
    subdirs.sort();
    let mut files: Vec<(PathBuf, Option<i64>)> = Vec::new();
    let mut class_names = Vec::new();
    for sd in &subdirs {
        let f = png_files(sd)?;
        if f.is_empty() {
            continue;
        }
        let label = class_names.len() as i64;
        class_names.push(
            sd.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        files.extend(f.into_iter().map(|p| (p, Some(label))));
    }
    let top = png_files(dir)?;
    let labelled = !files.is_empty();
    if labelled && !top.is_empty() {
        return Err(TrainError::Data(format!(
            "image folder {} mixes {} image(s) at the top level (e.g. {}) with class \
             sub-folders ({}): move the top-level images into a sub-folder of their own \
             (one class each), or the sub-folders out",
            dir.display(),
            top.len(),
            top[0].display(),
            class_names.join(", ")
        )));
    }
    if !labelled {
        files = top.into_iter().map(|p| (p, None)).collect();
    }
    if files.is_empty() {
        return Err(TrainError::Data(format!(
            "no .png files in {} (nor in its sub-folders)",
            dir.display()
        )));
    }
    let mut imgs = Vec::with_capacity(files.len());
    for (p, _) in &files {
        let img =
            image::open(p).map_err(|e| TrainError::bad(p, format!("not a readable PNG: {e}")))?;
        imgs.push(img);
    }
    let (w0, h0) = (imgs[0].width(), imgs[0].height());
    let odd: Vec<String> = files
        .iter()
        .zip(&imgs)
        .filter(|(_, im)| (im.width(), im.height()) != (w0, h0))
        .take(5)
        .map(|((p, _), im)| format!("{} is {}×{}", p.display(), im.width(), im.height()))
        .collect();
    if !odd.is_empty() {
        return Err(TrainError::Data(format!(
            "images of mixed sizes: {} is {w0}×{h0} but {}",
            files[0].0.display(),
            odd.join(", ")
        )));
    }
    let colour = imgs.iter().any(|im| im.color().has_color());
    let c = if colour { 3 } else { 1 };
    let (h, w) = (h0 as usize, w0 as usize);
    let mut x = Array2::<f32>::zeros((imgs.len(), c * h * w));
    for (i, im) in imgs.iter().enumerate() {
        let mut row = x.row_mut(i);
        if colour {
            let rgb = im.to_rgb8();
            for (xx, yy, px) in rgb.enumerate_pixels() {
                for ch in 0..3 {
                    row[ch * h * w + yy as usize * w + xx as usize] = px[ch] as f32 / 127.5 - 1.0;
                }
            }
        } else {
            let g = im.to_luma8();
            for (xx, yy, px) in g.enumerate_pixels() {
                row[yy as usize * w + xx as usize] = px[0] as f32 / 127.5 - 1.0;
            }
        }
    }
    let labels = labelled.then(|| files.iter().map(|(_, l)| l.unwrap_or(0)).collect());
    Ok(Loaded {
        x,
        shape: vec![c, h, w],
        labels,
        class_names: labelled.then_some(class_names),
        levels: Some(256),
    })
}

/// Where the channel axis of a 4-D `.npy` array [N, ·, ·, ·] sits (TOML `channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    /// [N, C, H, W] unless the second axis cannot be channels (not 1, 3 or 4) and the last
    /// can (1, 3 or 4): then [N, H, W, C] (NumPy/TensorFlow/PIL images).
    #[default]
    Auto,
    /// [N, C, H, W] (PyTorch).
    First,
    /// [N, H, W, C] (NumPy/TensorFlow/PIL).
    Last,
}

/// Whether a 4-D array of `shape` is channel-last under `channels`.
pub fn is_channel_last(shape: &[usize], channels: Channels) -> bool {
    let looks = |c: usize| matches!(c, 1 | 3 | 4);
    match channels {
        Channels::First => false,
        Channels::Last => true,
        Channels::Auto => shape.len() == 4 && !looks(shape[1]) && looks(shape[3]),
    }
}

/// Loads an .npy array of shape [N, …] (C or Fortran order): u8 (scaled x/127.5 − 1), f32 or
/// f64 (as they are). [N, H, W] is read as grey images [N, 1, H, W]; [N, D] as vectors of D;
/// 4-D arrays as [N, C, H, W], or [N, H, W, C] by `channels` (transposed to channels first).
pub fn load_npy(path: &Path, channels: Channels) -> Result<Loaded> {
    use super::npy::Values;
    let values = super::npy::read(path)?;
    let levels = matches!(values, Values::U8(_)).then_some(256);
    let arr: ArrayD<f32> = match values {
        Values::F32(a) => a,
        Values::F64(a) => a.mapv(|v| v as f32),
        Values::U8(a) => a.mapv(|v| v as f32 / 127.5 - 1.0),
        Values::I32(_) | Values::I64(_) => {
            return Err(TrainError::bad(
                path,
                "integer arrays are labels; image data must be u8, f32 or f64",
            ))
        }
    };
    if arr.ndim() < 2 || arr.shape()[0] == 0 {
        return Err(TrainError::bad(
            path,
            format!("array shape {:?}: expected [N, …] with N ≥ 1", arr.shape()),
        ));
    }
    if channels == Channels::Last && arr.ndim() != 4 {
        return Err(TrainError::bad(
            path,
            format!(
                "data.channels = \"last\" needs a 4-D array [N, H, W, C], got shape {:?}",
                arr.shape()
            ),
        ));
    }
    if arr.iter().any(|v| !v.is_finite()) {
        return Err(TrainError::bad(path, "array has NaN or infinite values"));
    }
    let arr = if is_channel_last(arr.shape(), channels) {
        arr.permuted_axes(IxDyn(&[0, 3, 1, 2]))
            .as_standard_layout()
            .into_owned()
    } else {
        arr
    };
    let n = arr.shape()[0];
    let mut shape: Vec<usize> = arr.shape()[1..].to_vec();
    if shape.len() == 2 {
        shape.insert(0, 1);
    }
    let d: usize = shape.iter().product();
    let x = arr
        .into_shape_with_order(IxDyn(&[n, d]))
        .and_then(|a| a.into_dimensionality())
        .map_err(|e| TrainError::bad(path, e.to_string()))?;
    Ok(Loaded {
        x,
        shape,
        labels: None,
        class_names: None,
        levels,
    })
}

/// Checks that class ids are exactly 0..K−1 with every id used: ids {1, 2} would make a model
/// with a third, never-seen class 0 (and an id of 10⁹ a 10⁹-wide embedding), so they are
/// refused with the ids found.
pub fn check_label_ids(path: &Path, labels: &[i64]) -> Result<()> {
    let ids: std::collections::BTreeSet<i64> = labels.iter().copied().collect();
    if let Some(&neg) = ids.iter().next().filter(|&&v| v < 0) {
        return Err(TrainError::bad(path, format!("negative label {neg}")));
    }
    let k = ids.len() as i64;
    if ids.iter().next_back().is_some_and(|&m| m >= k) {
        let shown: Vec<String> = ids.iter().take(12).map(i64::to_string).collect();
        let more = if ids.len() > 12 { ", …" } else { "" };
        return Err(TrainError::bad(
            path,
            format!(
                "label ids {{{}{more}}}: {k} distinct classes must be numbered 0..{}; renumber \
                 the labels (e.g. by rank)",
                shown.join(", "),
                k - 1
            ),
        ));
    }
    Ok(())
}

/// Loads integer labels from an .npy file (i64, i32 or u8), one per sample, numbered 0..K−1.
pub fn load_npy_labels(path: &Path) -> Result<Vec<i64>> {
    use super::npy::Values;
    let vals = super::npy::read(path)?;
    if vals.shape().len() != 1 {
        return Err(TrainError::bad(
            path,
            format!("labels must be a 1-D array, got shape {:?}", vals.shape()),
        ));
    }
    let v: Vec<i64> = match vals {
        Values::I64(a) => a.iter().copied().collect(),
        Values::I32(a) => a.iter().map(|&v| i64::from(v)).collect(),
        Values::U8(a) => a.iter().map(|&v| i64::from(v)).collect(),
        Values::F32(_) | Values::F64(_) => {
            return Err(TrainError::bad(
                path,
                "labels must be integers (i64, i32 or u8), not floats",
            ))
        }
    };
    check_label_ids(path, &v)?;
    Ok(v)
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // A small gzip can expand without bound: stop past the memory limit.
        let limit = tweedie_core::budget::max_bytes();
        flate2::read::GzDecoder::new(&raw[..])
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| TrainError::bad(path, format!("corrupt gzip: {e}")))?;
        if out.len() as u64 > limit {
            return Err(TrainError::bad(
                path,
                format!(
                    "gzip expands past the memory limit of {}",
                    tweedie_core::budget::human_bytes(limit.into())
                ),
            ));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file (LeCun's MNIST format, optionally gzipped) of unsigned bytes:
/// magic 0x00 0x00 0x08 ndim, then ndim big-endian u32 sizes, then the data.
fn read_idx_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let b = read_maybe_gz(path)?;
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(TrainError::bad(path, "not an IDX file (bad magic number)"));
    }
    if b[2] != 0x08 {
        return Err(TrainError::bad(
            path,
            format!("IDX type 0x{:02x} is not unsigned bytes (0x08)", b[2]),
        ));
    }
    let nd = b[3] as usize;
    if nd == 0 || b.len() < 4 + 4 * nd {
        return Err(TrainError::bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .collect();
    let data = &b[4 + 4 * nd..];
    // u32 sizes multiply past 2^64 with 3 or more dims: compare without overflow.
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        let count = count.map_or("more than 2^64".to_string(), |c| c.to_string());
        return Err(TrainError::bad(
            path,
            format!(
                "IDX header says {dims:?} = {count} bytes of data, file has {}",
                data.len()
            ),
        ));
    }
    Ok((dims, data.to_vec()))
}

/// Loads MNIST-style IDX images ([N, H, W] u8) and optional labels ([N] u8).
pub fn load_idx(images: &Path, labels: Option<&Path>) -> Result<Loaded> {
    let (dims, data) = read_idx_u8(images)?;
    if dims.len() != 3 || dims[0] == 0 {
        return Err(TrainError::bad(
            images,
            format!("IDX images must be [N, H, W] with N ≥ 1, got {dims:?}"),
        ));
    }
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    let x = Array2::from_shape_vec(
        (n, h * w),
        data.iter().map(|&v| v as f32 / 127.5 - 1.0).collect(),
    )
    .map_err(|e| TrainError::bad(images, e.to_string()))?;
    let labels = match labels {
        None => None,
        Some(lp) => {
            let (ld, l) = read_idx_u8(lp)?;
            if ld != [n] {
                return Err(TrainError::bad(
                    lp,
                    format!("IDX labels must be [{n}] to match the images, got {ld:?}"),
                ));
            }
            let l: Vec<i64> = l.iter().map(|&v| v as i64).collect();
            check_label_ids(lp, &l)?;
            Some(l)
        }
    };
    Ok(Loaded {
        x,
        shape: vec![1, h, w],
        labels,
        class_names: None,
        levels: Some(256),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_png(p: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
        img.save(p).unwrap();
    }

    #[test]
    fn png_folder_flat_and_by_class() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("a.png"), 4, 3, |x, _| {
            if x == 0 {
                255
            } else {
                0
            }
        });
        write_png(&dir.path().join("b.png"), 4, 3, |_, _| 51);
        let l = load_png_dir(dir.path())?;
        assert_eq!(l.shape, vec![1, 3, 4]);
        assert_eq!(l.x.nrows(), 2);
        assert!(l.labels.is_none());
        assert_eq!(l.x[[0, 0]], 1.0);
        assert_eq!(l.x[[0, 1]], -1.0);
        assert!((l.x[[1, 5]] - (51.0 / 127.5 - 1.0)).abs() < 1e-6);

        let dir = tempfile::tempdir().unwrap();
        for (cls, n) in [("cat", 2), ("dog", 3)] {
            let sd = dir.path().join(cls);
            std::fs::create_dir(&sd).unwrap();
            for i in 0..n {
                write_png(&sd.join(format!("{i}.png")), 2, 2, |_, _| 0);
            }
        }
        let l = load_png_dir(dir.path())?;
        assert_eq!(l.labels, Some(vec![0, 0, 1, 1, 1]));
        assert_eq!(
            l.class_names,
            Some(vec!["cat".to_string(), "dog".to_string()])
        );
        Ok(())
    }

    #[test]
    fn png_errors_name_the_files() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("a.png"), 4, 4, |_, _| 0);
        write_png(&dir.path().join("b.png"), 8, 4, |_, _| 0);
        let e = load_png_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("mixed sizes") && e.contains("a.png") && e.contains("b.png is 8×4"),
            "{e}"
        );

        std::fs::remove_file(dir.path().join("b.png")).unwrap();
        std::fs::write(dir.path().join("c.png"), b"not a png").unwrap();
        let e = load_png_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c.png") && e.contains("PNG"), "{e}");

        let e = load_png_dir(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("does not exist"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(load_png_dir(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no .png"));
    }

    #[test]
    fn npy_arrays_of_each_dtype() -> Result<()> {
        use ndarray_npy::WriteNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let a = ndarray::Array3::<u8>::from_shape_fn((2, 3, 4), |(i, j, k)| {
            (i * 100 + j * 10 + k) as u8
        });
        a.write_npy(std::fs::File::create(&p).unwrap()).unwrap();
        let l = load_npy(&p, Channels::Auto)?;
        assert_eq!(l.shape, vec![1, 3, 4]);
        assert_eq!(l.x.dim(), (2, 12));
        assert!((l.x[[1, 11]] - (123.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert_eq!(l.levels, Some(256));

        let p2 = dir.path().join("v.npy");
        ndarray::arr2(&[[0.5f64, -2.0], [1.0, 3.0]])
            .write_npy(std::fs::File::create(&p2).unwrap())
            .unwrap();
        let l = load_npy(&p2, Channels::Auto)?;
        assert_eq!(l.shape, vec![2]);
        assert_eq!(l.x[[0, 1]], -2.0);
        assert_eq!(l.levels, None);

        let p3 = dir.path().join("lab.npy");
        ndarray::arr1(&[2i64, 0, 1, 0])
            .write_npy(std::fs::File::create(&p3).unwrap())
            .unwrap();
        assert_eq!(load_npy_labels(&p3)?, vec![2, 0, 1, 0]);
        // Ids {1, 2} would make a third, empty class 0; 10⁹ a 10⁹-wide embedding.
        for bad in [vec![1i64, 2, 1], vec![0, 1_000_000_000]] {
            ndarray::Array1::from(bad)
                .write_npy(std::fs::File::create(&p3).unwrap())
                .unwrap();
            let e = load_npy_labels(&p3).unwrap_err().to_string();
            assert!(e.contains("lab.npy") && e.contains("numbered 0..1"), "{e}");
        }

        let bad = dir.path().join("bad.npy");
        std::fs::write(&bad, b"\x93NUMPY garbage").unwrap();
        let e = load_npy(&bad, Channels::Auto).unwrap_err().to_string();
        assert!(e.contains("bad.npy"), "{e}");
        assert!(load_npy(&dir.path().join("none.npy"), Channels::Auto)
            .unwrap_err()
            .to_string()
            .contains("none.npy"));
        Ok(())
    }

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn idx_images_and_labels_plain_and_gzipped() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let ip = dir.path().join("img-idx3-ubyte");
        std::fs::write(
            &ip,
            idx_bytes(&[2, 2, 3], &[0, 255, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]),
        )
        .unwrap();
        let lp = dir.path().join("lab-idx1-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&idx_bytes(&[2], &[1, 0])).unwrap();
        std::fs::write(&lp, gz.finish().unwrap()).unwrap();
        let l = load_idx(&ip, Some(&lp))?;
        assert_eq!(l.shape, vec![1, 2, 3]);
        assert_eq!(l.x[[0, 1]], 1.0);
        assert_eq!(l.labels, Some(vec![1, 0]));
        assert_eq!(l.levels, Some(256));
        // Dims whose product overflows are a clear error, not a panic.
        let huge = dir.path().join("huge");
        std::fs::write(&huge, idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[0; 4])).unwrap();
        let e = load_idx(&huge, None).unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("more than 2^64"), "{e}");

        let trunc = dir.path().join("trunc");
        std::fs::write(&trunc, idx_bytes(&[2, 2, 3], &[0; 5])).unwrap();
        let e = load_idx(&trunc, None).unwrap_err().to_string();
        assert!(e.contains("trunc") && e.contains("12 bytes"), "{e}");
        let wrong = dir.path().join("wrong");
        std::fs::write(&wrong, idx_bytes(&[3], &[1, 2, 3])).unwrap();
        let e = load_idx(&ip, Some(&wrong)).unwrap_err().to_string();
        assert!(e.contains("[2]"), "{e}");
        std::fs::write(&wrong, b"hello").unwrap();
        assert!(load_idx(&wrong, None)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        Ok(())
    }

    #[test]
    fn png_folder_refuses_mixed_levels_and_ignores_hidden_folders() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        for sd in ["cat", ".ipynb_checkpoints"] {
            std::fs::create_dir(dir.path().join(sd)).unwrap();
            write_png(&dir.path().join(sd).join("0.png"), 2, 2, |_, _| 0);
        }
        write_png(&dir.path().join(".hidden.png"), 2, 2, |_, _| 0);
        let l = load_png_dir(dir.path())?;
        assert_eq!(l.class_names, Some(vec!["cat".to_string()]));
        assert_eq!(l.x.nrows(), 1);
        write_png(&dir.path().join("top.png"), 2, 2, |_, _| 0);
        let e = load_png_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("1 image(s) at the top level") && e.contains("cat"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn channel_last_arrays_are_detected_or_forced() -> Result<()> {
        use ndarray_npy::WriteNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hwc.npy");
        // [N=2, H=6, W=5, C=3], value = 100·c + 10·h + w.
        let a = ndarray::Array4::<f32>::from_shape_fn((2, 6, 5, 3), |(_, h, w, c)| {
            (100 * c + 10 * h + w) as f32
        });
        a.write_npy(std::fs::File::create(&p).unwrap()).unwrap();
        for ch in [Channels::Auto, Channels::Last] {
            let l = load_npy(&p, ch)?;
            assert_eq!(l.shape, vec![3, 6, 5]);
            // Row-major [C, H, W]: entry (c = 2, h = 1, w = 3) at 2·30 + 1·5 + 3.
            assert_eq!(l.x[[1, 2 * 30 + 5 + 3]], 213.0);
        }
        assert_eq!(load_npy(&p, Channels::First)?.shape, vec![6, 5, 3]);
        assert!(!is_channel_last(&[2, 3, 32, 3], Channels::Auto));
        assert!(is_channel_last(&[2, 32, 32, 3], Channels::Auto));
        Ok(())
    }
}
