//! Bounds on every size a user controls: an allocation driven by a flag, a config key or a
//! file header is checked here before it happens, so that a typo such as `--n 1e19` or an
//! `.npy` header claiming 10¹² rows is a clear error, not an abort of the allocator.

use std::fmt::Display;

use crate::error::InvalidValue;

/// Environment variable that overrides [`max_bytes`] (a byte count), e.g. to test the limit.
pub const MAX_BYTES_ENV: &str = "TWEEDIE_MAX_BYTES";

/// Bytes assumed when the machine's memory cannot be read (non-Linux): 64 GiB.
const FALLBACK_BYTES: u64 = 64 << 30;

/// The most bytes one user-sized allocation may take: `TWEEDIE_MAX_BYTES` if set, else the
/// machine's physical memory (`MemTotal` of `/proc/meminfo`), else 64 GiB.
pub fn max_bytes() -> u64 {
    if let Some(v) = std::env::var(MAX_BYTES_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        return v;
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(FALLBACK_BYTES, |kib| kib.saturating_mul(1024))
}

/// A byte count for people: `1.5 GiB (1610612736 bytes)`.
pub fn human_bytes(b: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {} ({b} bytes)", UNITS[u])
    }
}

/// The product of `dims` (elements of an array of that shape), or an error naming `key` =
/// `value` when it does not fit in a `usize`.
pub fn elements(key: &str, value: impl Display, dims: &[usize]) -> Result<usize, InvalidValue> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            InvalidValue::new(
                key,
                value,
                format!("would need more than 2^64 elements (an array of shape {dims:?})"),
            )
        })
}

/// Checks that `count` values of `elem_bytes` bytes fit under [`max_bytes`]; the error names
/// `key` = `value`, the bytes it would need and the limit.
pub fn check_bytes(
    key: &str,
    value: impl Display,
    count: usize,
    elem_bytes: usize,
) -> Result<u64, InvalidValue> {
    let need = count as u128 * elem_bytes as u128;
    let limit = max_bytes();
    if need > limit as u128 {
        return Err(InvalidValue::new(
            key,
            value,
            format!(
                "would need {} of memory, more than the limit of {} (this machine's memory, \
                 or {MAX_BYTES_ENV})",
                human_bytes(need),
                human_bytes(limit as u128)
            ),
        ));
    }
    Ok(need as u64)
}

/// [`elements`] of `dims`, then [`check_bytes`] for `elem_bytes` each: the element count.
pub fn check_array(
    key: &str,
    value: impl Display + Clone,
    dims: &[usize],
    elem_bytes: usize,
) -> Result<usize, InvalidValue> {
    let n = elements(key, value.clone(), dims)?;
    check_bytes(key, value, n, elem_bytes)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_overflow_into_errors_naming_the_key() {
        assert_eq!(elements("n", 6, &[2, 3]).unwrap(), 6);
        let e = elements("--image", "1,2,3", &[usize::MAX, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--image") && e.contains("2^64"), "{e}");
    }

    #[test]
    fn byte_limit_names_need_and_limit() {
        // 2^40 f64 values = 8 TiB: more than any test machine holds.
        let e = check_array("--n", 1u64 << 40, &[1 << 40], 8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--n") && e.contains("8.0 TiB (8796093022208 bytes)") && e.contains("limit"),
            "{e}"
        );
        assert_eq!(check_array("--n", 10, &[10, 2], 8).unwrap(), 20);
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB (1610612736 bytes)");
        assert!(max_bytes() >= 1 << 20);
    }
}
