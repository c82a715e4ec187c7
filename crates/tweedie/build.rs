// rpath to libtorch and a forced libtorch_cuda dependency: see tweedie-build.
fn main() {
    tweedie_build::link_libtorch();
}
