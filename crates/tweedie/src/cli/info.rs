//! `tweedie info`: what libtorch this binary runs on.

use tch::{utils, Cuda};

/// No options: everything is read from the linked libtorch.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let version = tweedie::LIBTORCH_VERSION.unwrap_or("unknown");
    let lib = tweedie::LIBTORCH_LIB.unwrap_or("unknown");
    // From the build (libtorch_cuda.so present and linked), not from the runtime: a CUDA
    // libtorch on a machine without a GPU reports no CUDA hooks at run time.
    let cuda_build = match tweedie::LIBTORCH_CUDA {
        Some("1") => "yes (libtorch_cuda linked)",
        Some(_) => "no (CPU-only libtorch)",
        None => "unknown",
    };
    let cuda = Cuda::is_available();
    let cudnn = cuda && Cuda::cudnn_is_available();

    println!("tweedie {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch version   {version}");
    println!("libtorch library   {lib}");
    println!("CUDA build         {cuda_build}");
    println!("CUDA available     {}", yes_no(cuda));
    println!(
        "CUDA devices       {}",
        if cuda { Cuda::device_count() } else { 0 }
    );
    if cuda {
        println!(
            "CUDA runtime       {}",
            cuda_version(utils::version_cudart())
        );
    }
    println!("cuDNN available    {}", yes_no(cudnn));
    if cudnn {
        println!("cuDNN version      {}", utils::version_cudnn());
    }
    println!("intra-op threads   {}", utils::get_num_threads());
    println!("inter-op threads   {}", utils::get_num_interop_threads());
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// CUDA encodes versions as 1000·major + 10·minor (e.g. 13000 → 13.0).
fn cuda_version(v: i64) -> String {
    if v <= 0 {
        return "unknown".to_string();
    }
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cuda_versions_are_decoded() {
        assert_eq!(super::cuda_version(13000), "13.0");
        assert_eq!(super::cuda_version(12080), "12.8");
        assert_eq!(super::cuda_version(0), "unknown");
    }
}
