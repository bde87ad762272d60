//! The C functions of `cpp/shim.cpp` (what maxl-train needs of libtorch that tch does not wrap),
//! and the one way they are called: with an error buffer that the shim fills with the C++
//! exception's message instead of letting it cross into Rust.

use std::ffi::{CStr, c_char, c_int};

use crate::first_line;

unsafe extern "C" {
    pub(crate) fn maxl_forward_ad_enter(level: *mut u64, err: *mut c_char, len: usize) -> c_int;
    pub(crate) fn maxl_forward_ad_exit(level: u64, err: *mut c_char, len: usize) -> c_int;
    pub(crate) fn maxl_cuda_peak_allocated(
        device: c_int,
        bytes: *mut i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// Runs `f` (a shim call) with an error buffer of `len` bytes: Ok, or the first line of the
/// exception's message.
pub(crate) fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut err = [0 as c_char; 512];
    if f(err.as_mut_ptr(), err.len()) == 0 {
        return Ok(());
    }
    // SAFETY: the shim NUL-terminates inside the buffer (which starts zeroed).
    let message = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
    Err(first_line(&message).to_string())
}
