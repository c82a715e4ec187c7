//! A bounded `.npy` reader: the header is parsed and checked against the file's length before
//! anything is allocated, so a header claiming 10¹² rows is an error naming the file, not an
//! allocation abort; C and Fortran order and either byte order are read.
//!
//! And a streaming writer ([`NpyWriter`]): the header is written for the final row count, rows
//! are appended as they are produced, and the file appears atomically when every row is in,
//! so 50,000 samples are written without holding them.
//!
//! Format: NumPy's "NEP 1" (`\x93NUMPY`, version, header length, a Python dict literal with
//! `descr`, `fortran_order` and `shape`, then the raw data).

use std::io::Write as _;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use crate::error::{Result, TrainError};

/// Element types the loaders accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `u1`: 8-bit images.
    U8,
    /// `i4`.
    I32,
    /// `i8`.
    I64,
    /// `f4`.
    F32,
    /// `f8`.
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

impl Dtype {
    /// The `descr` the writer stores: little-endian (`|` for bytes).
    fn descr(self) -> &'static str {
        match self {
            Dtype::U8 => "|u1",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }
}

/// A value type the writer stores, with its dtype and little-endian bytes.
pub trait Element: Copy {
    const DTYPE: Dtype;
    /// Appends the value's little-endian bytes to `out`.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(u8, Dtype::U8);
element!(i32, Dtype::I32);
element!(i64, Dtype::I64);
element!(f32, Dtype::F32);
element!(f64, Dtype::F64);

/// The header of a C-order, little-endian `.npy` of `shape` and `dtype`: format version 1 (2
/// when the dict needs more than 65,535 bytes), the dict padded with spaces so that the data
/// starts at a multiple of 64 bytes, as NumPy writes it.
pub fn header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    );
    // Version 1 stores the dict's length in 16 bits; padding adds at most 63 bytes.
    let v1 = dict.len() + 64 <= u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    while (prefix + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Streams the rows of an `.npy` array [rows, …] to `path`: the header for the final shape
/// first, then rows as they come, into a temp file `.NAME.tmp-PID` beside `path`; [`finish`]
/// checks that every declared row was written, fsyncs, renames over `path` and fsyncs the
/// folder. Dropped unfinished (an error, a stop), it removes its temp file and `path` is
/// untouched.
///
/// [`finish`]: NpyWriter::finish
#[derive(Debug)]
pub struct NpyWriter<T: Element> {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    row_len: usize,
    rows: usize,
    written: usize,
    bytes: Vec<u8>,
    _values: PhantomData<T>,
}

impl<T: Element> NpyWriter<T> {
    /// Creates the temp file and writes the header of `shape` (`shape[0]` rows; a 0-D shape is
    /// one value).
    pub fn create(path: &Path, shape: &[usize]) -> Result<Self> {
        let bad = |r: String| TrainError::bad(path, r);
        let count = tweedie_core::budget::elements("shape", format!("{shape:?}"), shape)
            .map_err(|e| bad(e.reason))?;
        let rows = shape.first().copied().unwrap_or(1);
        let row_len = match count.checked_div(rows) {
            Some(len) => len,
            None => tweedie_core::budget::elements("shape", format!("{shape:?}"), &shape[1..])
                .map_err(|e| bad(e.reason))?,
        };
        let tmp = tweedie_nets::checkpoint::temp_path(path).map_err(|e| TrainError::io(path, e))?;
        let f = std::fs::File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        let mut w = NpyWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(std::io::BufWriter::new(f)),
            row_len,
            rows,
            written: 0,
            bytes: Vec::new(),
            _values: PhantomData,
        };
        w.write_bytes(&header(T::DTYPE, shape))?;
        Ok(w)
    }

    /// Rows declared by the header.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows appended so far.
    pub fn written(&self) -> usize {
        self.written
    }

    fn write_bytes(&mut self, b: &[u8]) -> Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| TrainError::bad(&self.path, "writer already finished"))?;
        f.write_all(b).map_err(|e| TrainError::io(&self.tmp, e))
    }

    /// Appends whole rows, C order (`values.len()` a multiple of the row length); more rows
    /// than the header declares is an error.
    pub fn append(&mut self, values: &[T]) -> Result<()> {
        let n = values.len().checked_div(self.row_len).unwrap_or(0);
        if values.len() != n * self.row_len {
            return Err(TrainError::bad(
                &self.path,
                format!(
                    "{} values are not whole rows of {}",
                    values.len(),
                    self.row_len
                ),
            ));
        }
        if n > self.rows - self.written {
            return Err(TrainError::bad(
                &self.path,
                format!(
                    "{n} more rows after {} of the {} the header declares",
                    self.written, self.rows
                ),
            ));
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        for &v in values {
            v.put_le(&mut bytes);
        }
        let r = self.write_bytes(&bytes);
        self.bytes = bytes;
        r?;
        self.written += n;
        Ok(())
    }

    /// Completes the file: every declared row must have been appended.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.rows && self.row_len > 0 {
            return Err(TrainError::bad(
                &self.path,
                format!(
                    "only {} of the {} declared rows were written",
                    self.written, self.rows
                ),
            ));
        }
        let f = self
            .file
            .take()
            .ok_or_else(|| TrainError::bad(&self.path, "writer already finished"))?;
        let done = (|| -> std::io::Result<()> {
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)
        })();
        if let Err(e) = done {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(TrainError::io(&self.path, e));
        }
        tweedie_nets::checkpoint::sync_parent(&self.path).map_err(|e| TrainError::io(&self.path, e))
    }
}

impl<T: Element> Drop for NpyWriter<T> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Checks, before anything is sampled or written, that an array of `dims` with `elem_bytes`
/// per value fits in the free space of the folder that will hold `path` (where the system
/// tells it); the error names `key` = `value`, the bytes needed and those free.
pub fn check_disk(
    key: &str,
    value: impl std::fmt::Display + Clone,
    dims: &[usize],
    elem_bytes: usize,
    path: &Path,
) -> Result<()> {
    use tweedie_core::budget::{elements, human_bytes};
    let count = elements(key, value.clone(), dims)?;
    let need = count as u128 * elem_bytes as u128;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match free_disk_bytes(dir) {
        Some(free) if need > free => Err(tweedie_core::InvalidValue::new(
            key,
            value,
            format!(
                "would need {} on disk for {}, the folder has {} free",
                human_bytes(need),
                path.display(),
                human_bytes(free)
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Bytes an unprivileged writer may still use in `dir`'s file system (`statvfs`), or `None`.
fn free_disk_bytes(dir: &Path) -> Option<u128> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: `c` is a NUL-terminated path and `s` a zeroed statvfs the call fills in.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some(u128::from(s.f_bavail) * u128::from(s.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Writes a whole array (C-order `values` of `shape`) atomically.
pub fn write<T: Element>(path: &Path, shape: &[usize], values: &[T]) -> Result<()> {
    let mut w = NpyWriter::<T>::create(path, shape)?;
    w.append(values)?;
    w.finish()
}

/// What an `.npy` header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Element type.
    pub dtype: Dtype,
    /// Whether multi-byte elements are big-endian (`>`).
    pub big_endian: bool,
    /// Column-major data (`fortran_order: True`).
    pub fortran_order: bool,
    /// Array shape.
    pub shape: Vec<usize>,
    /// Offset of the first data byte.
    pub data_offset: usize,
}

/// The value of `key` in the header dict: the text after `'key':`.
fn dict_value<'a>(dict: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let pat = format!("'{key}'");
    let at = dict
        .find(&pat)
        .or_else(|| dict.find(&format!("\"{key}\"")))
        .ok_or_else(|| format!("header has no `{key}`"))?;
    let rest = dict[at + pat.len()..].trim_start();
    rest.strip_prefix(':')
        .map(str::trim_start)
        .ok_or_else(|| format!("header: `{key}` has no value"))
}

/// Parses the header at the start of `bytes` (which may be only the file's first bytes).
pub fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy file (bad magic string)".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("truncated header ({len} bytes announced)"))?;
    let dict =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text".to_string())?;
    let descr = dict_value(dict, "descr")?;
    let quote = descr
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| {
            format!(
                "dtype {}: structured arrays are not supported",
                descr.chars().take(30).collect::<String>()
            )
        })?;
    let descr = descr[1..]
        .split(quote)
        .next()
        .ok_or("header: unterminated descr")?;
    // The byte-order mark is one ASCII character; anything else is not a descr we know.
    let (order, code) = match descr.char_indices().nth(1) {
        Some((i, _)) => descr.split_at(i),
        None => (descr, ""),
    };
    let big_endian = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(format!("dtype `{descr}`: unknown byte order")),
    };
    let dtype = match code {
        "u1" | "b1" => Dtype::U8,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        _ => {
            return Err(format!(
                "dtype `{descr}` is not supported (u1, i4, i8, f4 or f8)"
            ))
        }
    };
    let fo = dict_value(dict, "fortran_order")?;
    let fortran_order = if fo.starts_with("True") {
        true
    } else if fo.starts_with("False") {
        false
    } else {
        return Err("header: fortran_order is neither True nor False".into());
    };
    let sh = dict_value(dict, "shape")?;
    let inner = sh
        .strip_prefix('(')
        .and_then(|r| r.split(')').next())
        .ok_or("header: shape is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("header: shape entry `{s}` is not a size"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
        data_offset: end,
    })
}

/// Array values of one of the accepted types, in logical (C) order.
#[derive(Debug, Clone)]
pub enum Values {
    U8(ArrayD<u8>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
}

impl Values {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Values::U8(a) => a.shape(),
            Values::I32(a) => a.shape(),
            Values::I64(a) => a.shape(),
            Values::F32(a) => a.shape(),
            Values::F64(a) => a.shape(),
        }
    }

    /// Every value as f64 (integers exactly up to 2⁵³).
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Values::U8(a) => a.mapv(f64::from),
            Values::I32(a) => a.mapv(f64::from),
            Values::I64(a) => a.mapv(|v| v as f64),
            Values::F32(a) => a.mapv(f64::from),
            Values::F64(a) => a.clone(),
        }
    }
}

fn decode<T, const N: usize>(
    raw: &[u8],
    shape: &[usize],
    fortran: bool,
    big: bool,
    from: fn([u8; N], bool) -> T,
) -> std::result::Result<ArrayD<T>, String>
where
    T: Clone,
{
    let v: Vec<T> = raw
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            from(b, big)
        })
        .collect();
    let a = ArrayD::from_shape_vec(IxDyn(shape).set_f(fortran), v).map_err(|e| e.to_string())?;
    // Fortran-order arrays are copied into C order: every consumer reads rows.
    Ok(if fortran {
        a.as_standard_layout().into_owned()
    } else {
        a
    })
}

/// Reads an `.npy` file with a checked header: the data must be exactly what the header
/// declares, and must fit in memory, before anything is allocated.
pub fn read(path: &Path) -> Result<Values> {
    use std::io::Read;
    let bad = |r: String| TrainError::bad(path, r);
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| TrainError::io(path, e))?.len();
    let mut head = Vec::new();
    (&mut f)
        .take(1 << 20)
        .read_to_end(&mut head)
        .map_err(|e| TrainError::io(path, e))?;
    let h = parse_header(&head).map_err(bad)?;
    let count = tweedie_core::budget::elements("shape", format!("{:?}", h.shape), &h.shape)
        .map_err(|e| bad(e.reason))?;
    let need = count as u128 * h.dtype.size() as u128;
    let have = file_len.saturating_sub(h.data_offset as u64) as u128;
    if need != have {
        return Err(bad(format!(
            "header declares shape {:?} of {:?} = {need} bytes of data, the file holds {have}",
            h.shape, h.dtype
        )));
    }
    tweedie_core::budget::check_bytes("shape", format!("{:?}", h.shape), count, h.dtype.size())
        .map_err(|e| bad(format!("shape {:?}: {}", h.shape, e.reason)))?;
    let mut raw = head.split_off(h.data_offset.min(head.len()));
    f.read_to_end(&mut raw)
        .map_err(|e| TrainError::io(path, e))?;
    if raw.len() as u128 != need {
        return Err(bad("file changed while being read".into()));
    }
    let (s, fo, be) = (&h.shape[..], h.fortran_order, h.big_endian);
    let r = match h.dtype {
        Dtype::U8 => decode::<u8, 1>(&raw, s, fo, be, |b, _| b[0]).map(Values::U8),
        Dtype::I32 => decode::<i32, 4>(&raw, s, fo, be, |b, be| {
            if be {
                i32::from_be_bytes(b)
            } else {
                i32::from_le_bytes(b)
            }
        })
        .map(Values::I32),
        Dtype::I64 => decode::<i64, 8>(&raw, s, fo, be, |b, be| {
            if be {
                i64::from_be_bytes(b)
            } else {
                i64::from_le_bytes(b)
            }
        })
        .map(Values::I64),
        Dtype::F32 => decode::<f32, 4>(&raw, s, fo, be, |b, be| {
            if be {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }
        })
        .map(Values::F32),
        Dtype::F64 => decode::<f64, 8>(&raw, s, fo, be, |b, be| {
            if be {
                f64::from_be_bytes(b)
            } else {
                f64::from_le_bytes(b)
            }
        })
        .map(Values::F64),
    };
    r.map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn fortran_order_and_big_endian_read_in_logical_order() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.npy");
        // [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6.
        let data: Vec<u8> = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&p, npy("<f8", true, "(2, 3)", &data)).unwrap();
        let Values::F64(a) = read(&p)? else {
            panic!("not f64")
        };
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(
            a.iter().copied().collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let data: Vec<u8> = [7i32, -1].iter().flat_map(|v| v.to_be_bytes()).collect();
        std::fs::write(&p, npy(">i4", false, "(2,)", &data)).unwrap();
        let Values::I32(a) = read(&p)? else {
            panic!("not i32")
        };
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![7, -1]);
        Ok(())
    }

    #[test]
    fn streamed_rows_read_back_and_appear_only_when_complete() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let mut w = NpyWriter::<f64>::create(&p, &[5, 2])?;
        w.append(&[0.0, 1.0, 2.0, 3.0])?;
        assert!(!p.exists(), "the file appears only when finished");
        w.append(&[4.0, 5.0])?;
        let e = w.append(&[6.0]).unwrap_err().to_string();
        assert!(e.contains("not whole rows of 2"), "{e}");
        w.append(&[6.0, 7.0, 8.0, 9.0])?;
        let e = w.append(&[1.0, 1.0]).unwrap_err().to_string();
        assert!(e.contains("1 more rows after 5 of the 5"), "{e}");
        w.finish()?;
        let Values::F64(a) = read(&p)? else {
            panic!("not f64")
        };
        assert_eq!(a.shape(), &[5, 2]);
        assert_eq!(
            a.iter().copied().collect::<Vec<_>>(),
            (0..10).map(f64::from).collect::<Vec<_>>()
        );
        // NumPy's layout: the data starts at a multiple of 64 bytes.
        assert_eq!(
            parse_header(&std::fs::read(&p).unwrap())
                .unwrap()
                .data_offset
                % 64,
            0
        );

        // Unfinished or short: no file, no temp file left.
        let q = dir.path().join("short.npy");
        let mut w = NpyWriter::<f32>::create(&q, &[3, 1])?;
        w.append(&[1.0])?;
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("only 1 of the 3"), "{e}");
        drop(NpyWriter::<u8>::create(&q, &[2])?);
        assert!(!q.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        Ok(())
    }

    #[test]
    fn long_headers_use_format_version_2() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("deep.npy");
        // 30,000 unit axes: a dict of ~90 kB, past version 1's 16-bit length.
        let shape = vec![1usize; 30_000];
        write(&p, &shape, &[7i64])?;
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes[6], 2);
        let Values::I64(a) = read(&p)? else {
            panic!("not i64")
        };
        assert_eq!(a.shape(), &shape[..]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![7]);
        Ok(())
    }

    #[test]
    fn lying_headers_are_refused_before_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.npy");
        std::fs::write(&p, npy("<f4", false, "(1000000000000, 4)", &[0; 16])).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("huge.npy") && e.contains("1000000000000") && e.contains("holds 16"),
            "{e}"
        );
        std::fs::write(&p, npy("<f4", false, "(18446744073709551615, 4)", &[0; 16])).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("2^64"), "{e}");
        std::fs::write(&p, npy("<c16", false, "(1,)", &[0; 16])).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("c16"), "{e}");
    }
}
