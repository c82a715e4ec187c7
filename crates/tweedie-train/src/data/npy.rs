//! A bounded `.npy` reader: the header is parsed and checked against the file's length before
//! anything is allocated, so a header claiming 10¹² rows is an error naming the file, not an
//! allocation abort; C and Fortran order and either byte order are read.
//!
//! Format: NumPy's "NEP 1" (`\x93NUMPY`, version, header length, a Python dict literal with
//! `descr`, `fortran_order` and `shape`, then the raw data).

use std::path::Path;

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
    let (order, code) = descr.split_at(descr.len().min(1));
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
