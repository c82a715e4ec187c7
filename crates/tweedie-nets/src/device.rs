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

/// Runs `f` for inference: no gradients, and bf16 autocast when `bf16` and on CUDA.
pub fn inference<T>(bf16: bool, f: impl FnOnce() -> T) -> T {
    tch::no_grad(|| tch::autocast(bf16 && cuda_available(), f))
}
