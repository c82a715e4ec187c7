//! Builds `src/shim.cpp`, the C ABI over c10d, against the libtorch that torch-sys found.
//!
//! Gloo's headers are not in the PyTorch wheel (ProcessGroupGloo.hpp includes them): they
//! come from the system (`libgloo-dev`, installed by `cargo xtask setup`), or from
//! `GLOO_INCLUDE_DIR`. Without them the shim is built without Gloo and says so at run time.
//! NCCL is compiled in when libtorch has CUDA and the wheel's CUDA runtime and NCCL headers
//! are found (or `CUDA_HOME`'s).

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=TWEEDIE_DIST_NO_NCCL");
    let Some(info) = tweedie_build::link_libtorch() else {
        println!(
            "cargo:warning=tweedie-dist: torch-sys published no libtorch folder; shim not built"
        );
        return;
    };
    let lib_dir = info.lib_dir.canonicalize().unwrap_or(info.lib_dir.clone());
    let root = lib_dir.parent().unwrap_or(&lib_dir).to_path_buf();
    let include = root.join("include");

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("src/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .flag_if_supported("-Wno-missing-field-initializers")
        .warnings(false);

    match gloo_include() {
        Some(dir) => {
            // The compiler's default path needs no -I (an explicit -I/usr/include breaks
            // libstdc++'s #include_next).
            if dir != Path::new("/usr/include") {
                build.include(&dir);
            }
            build
                .define("USE_C10D_GLOO", None)
                .define("TWEEDIE_GLOO", None);
            println!("cargo:rustc-cfg=tweedie_gloo");
        }
        None => println!(
            "cargo:warning=tweedie-dist: gloo headers not found (install libgloo-dev, e.g. with \
             `cargo xtask setup`, or set GLOO_INCLUDE_DIR); building without Gloo"
        ),
    }
    println!("cargo:rustc-check-cfg=cfg(tweedie_gloo)");

    if info.cuda && env::var_os("TWEEDIE_DIST_NO_NCCL").is_none() {
        match cuda_includes(&root) {
            Some(dirs) => {
                for d in dirs.iter().filter(|d| d.as_path() != Path::new("/usr/include")) {
                    build.include(d);
                }
                build
                    .define("USE_C10D_NCCL", None)
                    .define("USE_CUDA", None)
                    .define("TWEEDIE_NCCL", None);
                println!("cargo:rustc-link-search=native={}", lib_dir.display());
                println!("cargo:rustc-link-lib=dylib=torch_cuda");
                println!("cargo:rustc-link-lib=dylib=c10_cuda");
            }
            None => println!(
                "cargo:warning=tweedie-dist: libtorch has CUDA but cuda_runtime_api.h / nccl.h \
                 crt/host_config.h / nv/target were not found (wheel's nvidia/*/include or CUDA_HOME); building without NCCL"
            ),
        }
    }
    build.compile("tweedie_dist_shim");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

fn gloo_include() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = env::var_os("GLOO_INCLUDE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.extend(["/usr/include", "/usr/local/include"].map(PathBuf::from));
    for d in &candidates {
        println!("cargo:rerun-if-changed={}", d.join("gloo").display());
    }
    candidates
        .into_iter()
        .find(|d| d.join("gloo/config.h").is_file())
}

/// The folders holding cuda_runtime_api.h and nccl.h: the wheel's `nvidia/…/include` next
/// to `torch/`, else `CUDA_HOME/include`.
fn cuda_includes(torch_root: &Path) -> Option<Vec<PathBuf>> {
    let mut roots = Vec::new();
    if let Some(site) = torch_root.parent() {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            for e in entries.flatten() {
                let include = e.path().join("include");
                // Rebuild when set-up adds headers (e.g. nvidia-cuda-crt's crt/).
                println!("cargo:rerun-if-changed={}", include.display());
                roots.push(include);
            }
        }
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        roots.push(PathBuf::from(home).join("include"));
    }
    roots.push(PathBuf::from("/usr/local/cuda/include"));
    roots.push(PathBuf::from("/usr/include"));
    let find = |name: &str| roots.iter().find(|d| d.join(name).is_file()).cloned();
    // cuda_runtime.h includes crt/host_config.h, which the runtime wheel lacks: the
    // `nvidia-cuda-crt` wheel (installed by `cargo xtask setup` on CUDA wheels) adds it.
    let cuda = find("crt/host_config.h")?;
    let nccl = find("nccl.h")?;
    // cuda_fp16.h includes <nv/target> (CCCL: `nvidia-cuda-cccl`, at include/ or include/cccl/).
    let cccl = roots
        .iter()
        .flat_map(|d| [d.clone(), d.join("cccl")])
        .find(|d| d.join("nv/target").is_file())?;
    let mut dirs = vec![cuda, cccl];
    if !dirs.contains(&nccl) {
        dirs.push(nccl);
    }
    Some(dirs)
}
