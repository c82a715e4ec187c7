//! The 8×8 handwritten digits (UCI optdigits test set as shipped by scikit-learn): 1,797
//! images of 64 pixel values 0–16 and a label 0–9, one CSV row each, gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Result, TrainError};

/// Number of images in the file.
pub const N_DIGITS: usize = 1797;
/// Pixel levels 0 … 16 (stored as x/8 − 1).
pub const LEVELS: u32 = 17;
/// Where the project's set-up puts the file, relative to the repository root.
pub const DIGITS_REL_PATH: &str = ".venv/share/tweedie/digits.csv.gz";

/// Raw digits: pixels 0–16 as f32 [N, 64] and labels 0–9.
#[derive(Debug, Clone)]
pub struct RawDigits {
    pub pixels: Array2<f32>,
    pub labels: Vec<i64>,
}

/// Finds the digits file: `TWEEDIE_DIGITS` if set, else `.venv/share/tweedie/digits.csv.gz`
/// in the current directory or any parent, else next to this crate's workspace.
pub fn default_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TWEEDIE_DIGITS") {
        return Ok(PathBuf::from(p));
    }
    let mut tried = Vec::new();
    if let Ok(mut dir) = std::env::current_dir() {
        loop {
            let p = dir.join(DIGITS_REL_PATH);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
            if !dir.pop() {
                break;
            }
        }
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DIGITS_REL_PATH);
    if ws.is_file() {
        return Ok(ws);
    }
    Err(TrainError::Data(format!(
        "digits data not found (looked for {DIGITS_REL_PATH} in the current directory and its parents, \
         and in the workspace); run `cargo xtask setup`, set TWEEDIE_DIGITS, or give data.path"
    )))
}

/// Reads and validates the gzipped CSV: every row has 64 integers in 0..=16 and a label in 0..=9.
pub fn load(path: &Path) -> Result<RawDigits> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| TrainError::bad(path, format!("not a gzipped text file: {e}")))?;
    let mut pixels = Vec::with_capacity(N_DIGITS * 64);
    let mut labels = Vec::with_capacity(N_DIGITS);
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let vals: Vec<&str> = line.split(',').collect();
        if vals.len() != 65 {
            return Err(TrainError::bad(
                path,
                format!("line {}: {} fields, expected 65", ln + 1, vals.len()),
            ));
        }
        for (j, v) in vals.iter().enumerate() {
            let x: f64 = v.trim().parse().map_err(|_| {
                TrainError::bad(
                    path,
                    format!("line {}: field {} is `{v}`, not a number", ln + 1, j + 1),
                )
            })?;
            let max = if j < 64 { f64::from(LEVELS - 1) } else { 9.0 };
            if !(0.0..=max).contains(&x) || x.fract() != 0.0 {
                return Err(TrainError::bad(
                    path,
                    format!(
                        "line {}: field {} is {x}, expected an integer in 0..={max}",
                        ln + 1,
                        j + 1
                    ),
                ));
            }
            if j < 64 {
                pixels.push(x as f32);
            } else {
                labels.push(x as i64);
            }
        }
    }
    if labels.is_empty() {
        return Err(TrainError::bad(path, "no rows"));
    }
    let n = labels.len();
    let pixels = Array2::from_shape_vec((n, 64), pixels)
        .map_err(|e| TrainError::bad(path, e.to_string()))?;
    Ok(RawDigits { pixels, labels })
}

/// Whether image i belongs to the fixed held-out split: every 6th image (i mod 6 = 5),
/// 299 of 1,797. Deterministic and independent of any seed, so every run and the digits
/// classifier agree on it; the file's order is not sorted by class, so each class is
/// represented in both splits.
pub fn is_held_out(i: usize) -> bool {
    i % 6 == 5
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_shipped_file_has_1797_images_of_ten_classes() -> Result<()> {
        let d = load(&default_path()?)?;
        assert_eq!(d.pixels.dim(), (N_DIGITS, 64));
        let mut counts = [0usize; 10];
        for &l in &d.labels {
            counts[l as usize] += 1;
        }
        // Known class counts of the scikit-learn digits set.
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        assert_eq!(d.pixels.iter().cloned().fold(f32::MIN, f32::max), 16.0);
        assert_eq!((0..N_DIGITS).filter(|&i| is_held_out(i)).count(), 299);
        Ok(())
    }

    #[test]
    fn corrupt_and_missing_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.csv.gz");
        let e = load(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.csv.gz"), "{e}");

        let plain = dir.path().join("plain.csv.gz");
        std::fs::write(&plain, b"0,1,2\n").unwrap();
        let e = load(&plain).unwrap_err().to_string();
        assert!(e.contains("plain.csv.gz") && e.contains("gzip"), "{e}");

        let short = dir.path().join("short.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"0,1,2\n").unwrap();
        std::fs::write(&short, gz.finish().unwrap()).unwrap();
        let e = load(&short).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("3 fields"), "{e}");

        let bad = dir.path().join("bad.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let row: Vec<String> = (0..64)
            .map(|i| if i == 10 { "17".into() } else { "0".into() })
            .collect();
        writeln!(gz, "{},3", row.join(",")).unwrap();
        std::fs::write(&bad, gz.finish().unwrap()).unwrap();
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("field 11") && e.contains("17"), "{e}");
    }
}
