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
}

fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads a folder of PNGs. If the folder holds sub-folders with PNGs, each sub-folder is a
/// class (sorted by name, label = its index); otherwise the PNGs in the folder itself are
/// read, unlabelled. All images must have one size; they are grey (C = 1) unless any has
/// colour, then RGB (C = 3). Alpha is dropped.
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
        if p.is_dir() {
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
    let labelled = !files.is_empty();
    if !labelled {
        files = png_files(dir)?.into_iter().map(|p| (p, None)).collect();
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
    })
}

/// Loads an .npy array of shape [N, …]: u8 (scaled x/127.5 − 1), f32 or f64 (as they are).
/// A 3-D [N, H, W] array is read as grey images [N, 1, H, W]; [N, D] as vectors of D.
pub fn load_npy(path: &Path) -> Result<Loaded> {
    use ndarray_npy::ReadNpyExt;
    let open = || std::fs::File::open(path).map_err(|e| TrainError::io(path, e));
    let arr: ArrayD<f32> = match ArrayD::<f32>::read_npy(open()?) {
        Ok(a) => a,
        Err(e32) => match ArrayD::<f64>::read_npy(open()?) {
            Ok(a) => a.mapv(|v| v as f32),
            Err(_) => match ArrayD::<u8>::read_npy(open()?) {
                Ok(a) => a.mapv(|v| v as f32 / 127.5 - 1.0),
                Err(_) => {
                    return Err(TrainError::bad(
                        path,
                        format!("not a readable .npy array of u8, f32 or f64: {e32}"),
                    ))
                }
            },
        },
    };
    if arr.ndim() < 2 || arr.shape()[0] == 0 {
        return Err(TrainError::bad(
            path,
            format!("array shape {:?}: expected [N, …] with N ≥ 1", arr.shape()),
        ));
    }
    if arr.iter().any(|v| !v.is_finite()) {
        return Err(TrainError::bad(path, "array has NaN or infinite values"));
    }
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
    })
}

/// Loads integer labels from an .npy file (i64, i32 or u8), one per sample.
pub fn load_npy_labels(path: &Path) -> Result<Vec<i64>> {
    use ndarray_npy::ReadNpyExt;
    let open = || std::fs::File::open(path).map_err(|e| TrainError::io(path, e));
    let v: Vec<i64> = match ndarray::Array1::<i64>::read_npy(open()?) {
        Ok(a) => a.to_vec(),
        Err(e) => match ndarray::Array1::<i32>::read_npy(open()?) {
            Ok(a) => a.iter().map(|&v| v as i64).collect(),
            Err(_) => match ndarray::Array1::<u8>::read_npy(open()?) {
                Ok(a) => a.iter().map(|&v| v as i64).collect(),
                Err(_) => {
                    return Err(TrainError::bad(
                        path,
                        format!("not a 1-D integer .npy array: {e}"),
                    ))
                }
            },
        },
    };
    if v.iter().any(|&l| l < 0) {
        return Err(TrainError::bad(path, "negative label"));
    }
    Ok(v)
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| TrainError::bad(path, format!("corrupt gzip: {e}")))?;
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
    let count: usize = dims.iter().product();
    let data = &b[4 + 4 * nd..];
    if data.len() != count {
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
            Some(l.iter().map(|&v| v as i64).collect())
        }
    };
    Ok(Loaded {
        x,
        shape: vec![1, h, w],
        labels,
        class_names: None,
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
        let l = load_npy(&p)?;
        assert_eq!(l.shape, vec![1, 3, 4]);
        assert_eq!(l.x.dim(), (2, 12));
        assert!((l.x[[1, 11]] - (123.0 / 127.5 - 1.0)).abs() < 1e-6);

        let p2 = dir.path().join("v.npy");
        ndarray::arr2(&[[0.5f64, -2.0], [1.0, 3.0]])
            .write_npy(std::fs::File::create(&p2).unwrap())
            .unwrap();
        let l = load_npy(&p2)?;
        assert_eq!(l.shape, vec![2]);
        assert_eq!(l.x[[0, 1]], -2.0);

        let p3 = dir.path().join("lab.npy");
        ndarray::arr1(&[3i64, 1])
            .write_npy(std::fs::File::create(&p3).unwrap())
            .unwrap();
        assert_eq!(load_npy_labels(&p3)?, vec![3, 1]);

        let bad = dir.path().join("bad.npy");
        std::fs::write(&bad, b"\x93NUMPY garbage").unwrap();
        let e = load_npy(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.npy"), "{e}");
        assert!(load_npy(&dir.path().join("none.npy"))
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
        gz.write_all(&idx_bytes(&[2], &[7, 1])).unwrap();
        std::fs::write(&lp, gz.finish().unwrap()).unwrap();
        let l = load_idx(&ip, Some(&lp))?;
        assert_eq!(l.shape, vec![1, 2, 3]);
        assert_eq!(l.x[[0, 1]], 1.0);
        assert_eq!(l.labels, Some(vec![7, 1]));

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
}
