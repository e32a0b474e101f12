//! A frozen TorchScript module: the featurizer with BatchNorm folded into its convolutions
//! and, on CPU, optimised for inference with oneDNN (`cpp/frozen.cpp`), run without
//! autograd. tch loads TorchScript but cannot freeze it.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use tch::{Device, Tensor};

extern "C" {
    fn aerial_jit_load_frozen(
        path: *const c_char,
        cuda_index: c_int,
        optimize: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn aerial_jit_forward(
        module: *mut c_void,
        input: *const torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> *mut torch_sys::C_tensor;
    fn aerial_jit_free(module: *mut c_void);
    fn aerial_jit_free_error(err: *mut c_char);
}

/// Loading or running a frozen module failed; the message is libtorch's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FrozenError(String);

/// Takes ownership of a C error string.
fn take_error(err: *mut c_char) -> FrozenError {
    if err.is_null() {
        return FrozenError("libtorch failed without a message".into());
    }
    // SAFETY: the shim returns a NUL-terminated string from strdup, freed once here
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { aerial_jit_free_error(err) };
    FrozenError(msg)
}

/// A frozen module on one device.
pub struct Frozen {
    ptr: NonNull<c_void>,
}

impl Frozen {
    /// Loads `path` onto `device`, in eval mode, frozen.
    pub fn load(path: &Path, device: Device) -> Result<Self, FrozenError> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| FrozenError(format!("path {} contains NUL", path.display())))?;
        let cuda = match device {
            Device::Cuda(i) => i as c_int,
            _ => -1,
        };
        // optimize_for_inference's passes target CPU (oneDNN); CUDA gets the frozen graph
        let optimize = c_int::from(device == Device::Cpu);
        let mut err = std::ptr::null_mut();
        // SAFETY: valid C string; the shim catches every C++ exception
        let ptr = unsafe { aerial_jit_load_frozen(c_path.as_ptr(), cuda, optimize, &mut err) };
        NonNull::new(ptr)
            .map(|ptr| Self { ptr })
            .ok_or_else(|| take_error(err))
    }

    /// `forward(x)` without autograd.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, FrozenError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: `x` outlives the call; the returned tensor is new and owned by us
        let y = unsafe { aerial_jit_forward(self.ptr.as_ptr(), x.as_ptr(), &mut err) };
        if y.is_null() {
            return Err(take_error(err));
        }
        Ok(unsafe { Tensor::from_ptr(y) })
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: allocated by aerial_jit_load_frozen, freed exactly once
        unsafe { aerial_jit_free(self.ptr.as_ptr()) }
    }
}
