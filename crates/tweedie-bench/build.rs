// rpath to libtorch and a forced libtorch_cuda dependency (consistency's CUDA checks): see
// tweedie-build.
fn main() {
    tweedie_build::link_libtorch();
}
