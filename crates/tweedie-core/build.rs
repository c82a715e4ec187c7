// Under the `tch` feature only (torch-sys is then a dependency and publishes
// DEP_TCH_LIBTORCH_LIB): rpath to libtorch and a forced libtorch_cuda dependency for
// this package's tests. Without the feature this does nothing. See tweedie-build.
fn main() {
    tweedie_build::link_libtorch();
}
