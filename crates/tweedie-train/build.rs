// rpath to libtorch and a forced libtorch_cuda dependency for this package's tests,
// examples and benches: see tweedie-build.
fn main() {
    tweedie_build::link_libtorch();
}
