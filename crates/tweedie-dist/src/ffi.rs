//! The shim's C ABI (src/shim.cpp). Every fallible call returns NULL or a malloc'd message.

use std::os::raw::{c_char, c_int, c_void};
use torch_sys::C_tensor;

extern "C" {
    pub fn tw_free_str(s: *mut c_char);
    pub fn tw_backends() -> c_int;
    pub fn tw_pg_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        serve: c_int,
        backend: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn tw_pg_free(pg: *mut c_void);
    pub fn tw_allreduce(pg: *mut c_void, t: *mut C_tensor, op: c_int) -> *mut c_char;
    pub fn tw_broadcast(pg: *mut c_void, t: *mut C_tensor, root: c_int) -> *mut c_char;
    pub fn tw_barrier(pg: *mut c_void) -> *mut c_char;
    pub fn tw_allgather(
        pg: *mut c_void,
        outs: *const *mut C_tensor,
        n: c_int,
        input: *mut C_tensor,
    ) -> *mut c_char;
    pub fn tw_reducer_new(
        pg: *mut c_void,
        params: *const *mut C_tensor,
        n: c_int,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn tw_reducer_prepare_forward(r: *mut c_void) -> *mut c_char;
    pub fn tw_reducer_prepare_backward(r: *mut c_void) -> *mut c_char;
    pub fn tw_reducer_free(r: *mut c_void);
}

/// Turn a shim return value into `Err(message)`, freeing the C string.
pub fn check(ret: *mut c_char) -> Result<(), String> {
    if ret.is_null() {
        return Ok(());
    }
    // SAFETY: non-null returns are NUL-terminated strings malloc'd by the shim.
    let msg = unsafe { std::ffi::CStr::from_ptr(ret) }
        .to_string_lossy()
        .trim()
        .to_string();
    unsafe { tw_free_str(ret) };
    Err(msg)
}
