//! Devices: `auto | cpu | cuda | cuda:N` parsing, thread count, no-grad inference.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{NetsError, Result};

/// A device request as written on the command line or in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = NetsError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| NetsError::InvalidDevice {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| bad("expected cuda:N with N a GPU index")),
                None => Err(bad("expected auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = NetsError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The tch device; `cuda:N` fails with a clear error when that GPU is absent.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Auto => Ok(Device::cuda_if_available()),
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                let count = tch::Cuda::device_count().max(0) as usize;
                if n < count {
                    Ok(Device::Cuda(n))
                } else {
                    Err(NetsError::InvalidDevice {
                        value: self.to_string(),
                        reason: format!("{count} CUDA device(s) visible"),
                    })
                }
            }
        }
    }
}

/// Whether a CUDA device is usable by libtorch.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Sets libtorch's intra-op threads to `n`; when `None`, to `OMP_NUM_THREADS` if that is a
/// positive integer (the variable PyTorch and launchers use), else to the available cores.
/// Returns the count set.
pub fn set_threads(n: Option<usize>) -> usize {
    let n = n
        .or_else(omp_num_threads)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    tch::set_num_threads(n as i32);
    n
}

/// `OMP_NUM_THREADS` as a positive count; a value that is not one is named on stderr and
/// ignored (as PyTorch does), rather than failing a run over an environment variable.
fn omp_num_threads() -> Option<usize> {
    let raw = std::env::var("OMP_NUM_THREADS").ok()?;
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            eprintln!(
                "warning: OMP_NUM_THREADS={raw:?} is not a positive integer; using every core"
            );
            None
        }
    }
}

/// Keeps freed memory in the process for reuse (glibc only; a no-op elsewhere). Returns
/// whether the allocator took the settings.
///
/// A sampler's state buffers and a model's outputs are megabytes each and are freed and
/// allocated again every step. glibc's defaults hand such blocks back to the kernel
/// (`munmap`, or trimming the heap's top), so the next step page-faults on every page it
/// writes: on a [64, 3072] f64 state that was most of a multistep sampler's per-step
/// overhead (docs/benchmarks.md, "Overhead per step"). Blocks up to 32 MiB now come from the
/// heap and stay mapped; the cost is that the process keeps its peak heap until it exits,
/// which suits the command-line tools, whose runs are one job each. Binaries call this once
/// at start-up; `GLIBC_TUNABLES` (`glibc.malloc.mmap_threshold`, `glibc.malloc.trim_threshold`)
/// sets the same for any process. `TWEEDIE_MALLOC_DEFAULTS=1` leaves glibc's defaults.
pub fn retain_freed_memory() -> bool {
    !malloc_defaults_asked() && set_malloc_thresholds()
}

/// The `GLIBC_TUNABLES` value giving another process (a benchmark's Python side) the settings
/// of [`retain_freed_memory`], or `None` where that does not apply (not glibc, or
/// `TWEEDIE_MALLOC_DEFAULTS=1`).
pub fn retained_memory_tunables() -> Option<String> {
    (cfg!(all(target_os = "linux", target_env = "gnu")) && !malloc_defaults_asked()).then(|| {
        format!(
            "glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
        )
    })
}

/// Bytes above which `malloc` would `mmap` a block (glibc's ceiling on 64-bit targets).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the heap's top that is kept instead of returned to the kernel.
const TRIM_THRESHOLD: i32 = i32::MAX;

fn malloc_defaults_asked() -> bool {
    std::env::var_os("TWEEDIE_MALLOC_DEFAULTS").is_some_and(|v| v == "1")
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc_thresholds() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate (at start-up) and glibc serialises it with malloc in any case.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_thresholds() -> bool {
    false
}

/// Runs `f` for inference: no gradients, and bf16 autocast when `bf16` and on CUDA.
pub fn inference<T>(bf16: bool, f: impl FnOnce() -> T) -> T {
    tch::no_grad(|| tch::autocast(bf16 && cuda_available(), f))
}

#[cfg(test)]
mod malloc_tests {
    use super::*;

    #[test]
    fn glibc_takes_the_retention_settings() {
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(retain_freed_memory(), glibc, "mallopt refused a threshold");
        let tunables = retained_memory_tunables();
        assert_eq!(tunables.is_some(), glibc);
        if let Some(t) = tunables {
            assert_eq!(
                t,
                "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647"
            );
        }
    }
}
