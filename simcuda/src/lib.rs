//! A simulated CUDA driver: the driver API functions kiln's CUDA runtime calls
//! (`kiln_backend::cuda`, through cudarc), implemented over the PTX simulator of the
//! tests (`tests/support/ptx_sim.rs`), so that the runtime — device discovery,
//! allocation, copies, module loading, launches, synchronisation — runs end to end
//! without a GPU. tests/cuda.rs runs on it in CI (`.ci/run` links the library as
//! `libcuda.so` and puts it on `LD_LIBRARY_PATH`), and on a real driver with a GPU
//! (`benches/gpu.sh`).
//!
//! One device, "kiln PTX simulator", of compute capability 9.0 with 4
//! multiprocessors. Device memory is one array of 32-bit words per allocation at the
//! simulator's addresses; copies and memsets take any whole words inside one
//! allocation; anything else, an unknown handle, or a kernel the
//! simulator rejects (an access out of bounds, a race, an instruction outside the
//! subset) is an error code, with the simulator's message on standard error. Launches
//! run to completion before they return, so synchronising has nothing to wait for.

// The simulator is shared with the tests, which use all of it; this library does
// not need its parsing of modules it did not load.
#[allow(dead_code)]
#[path = "../../tests/support/ptx_sim.rs"]
mod ptx_sim;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uchar, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// `CUresult` values.
const SUCCESS: c_uint = 0;
const INVALID_VALUE: c_uint = 1;
const NO_DEVICE: c_uint = 100;
const INVALID_DEVICE: c_uint = 101;
const INVALID_IMAGE: c_uint = 200;
const INVALID_HANDLE: c_uint = 400;
const NOT_FOUND: c_uint = 500;
const LAUNCH_FAILED: c_uint = 719;

/// `CUdevice_attribute` values the runtime asks for.
const MULTIPROCESSOR_COUNT: c_uint = 16;
const COMPUTE_CAPABILITY_MAJOR: c_uint = 75;
const COMPUTE_CAPABILITY_MINOR: c_uint = 76;

const DEVICE_NAME: &CStr = c"kiln PTX simulator";
const MULTIPROCESSORS: c_int = 4;

/// Everything the simulated device holds.
struct Device {
    /// Allocations are the simulator's buffers; a freed one is left empty.
    memory: ptx_sim::Memory,
    /// Loaded modules by handle (index + 1); an unloaded one is `None`.
    modules: Vec<Option<ptx_sim::Module>>,
    /// Functions by handle (index + 1): their module's handle and entry name.
    functions: Vec<(usize, String)>,
    /// The handle of each (module, entry) already handed out.
    function_handles: HashMap<(usize, String), usize>,
}

static DEVICE: Mutex<Option<Device>> = Mutex::new(None);

/// The device, created on first use.
fn device() -> MutexGuard<'static, Option<Device>> {
    let mut guard = DEVICE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.get_or_insert_with(|| Device {
        memory: ptx_sim::Memory::new(Vec::new()),
        modules: Vec::new(),
        functions: Vec::new(),
        function_handles: HashMap::new(),
    });
    guard
}

/// Runs `f` on the device; a panic (the simulator rejecting something) is `failed`.
fn with_device(failed: c_uint, f: impl FnOnce(&mut Device) -> c_uint) -> c_uint {
    let mut guard = device();
    let Some(device) = guard.as_mut() else {
        return failed;
    };
    catch_unwind(AssertUnwindSafe(|| f(device))).unwrap_or(failed)
}

/// The `len` words of an allocation from `address` on, if they lie inside it.
fn words_at(device: &mut Device, address: u64, len: usize) -> Option<&mut [u32]> {
    let index = (0..device.memory.buffers.len())
        .rev()
        .find(|&i| ptx_sim::buffer_address(i) <= address)?;
    let bytes = address - ptx_sim::buffer_address(index);
    if !bytes.is_multiple_of(4) {
        return None;
    }
    let start = usize::try_from(bytes / 4).ok()?;
    device.memory.buffers[index].get_mut(start..start.checked_add(len)?)
}

/// The live allocation that starts at `address`.
fn allocated(device: &Device, address: u64) -> Option<usize> {
    (0..device.memory.buffers.len())
        .find(|&i| ptx_sim::buffer_address(i) == address && !device.memory.buffers[i].is_empty())
}

/// A whole number of words, as every allocation holds.
fn words(bytes: usize) -> Option<usize> {
    bytes.is_multiple_of(4).then_some(bytes / 4)
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> c_uint {
    if flags != 0 {
        return INVALID_VALUE;
    }
    drop(device());
    SUCCESS
}

/// # Safety
///
/// `count` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> c_uint {
    unsafe { *count = 1 };
    SUCCESS
}

/// # Safety
///
/// `device` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut c_int, ordinal: c_int) -> c_uint {
    if ordinal != 0 {
        return INVALID_DEVICE;
    }
    unsafe { *device = 0 };
    SUCCESS
}

/// # Safety
///
/// `name` has room for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> c_uint {
    let bytes = DEVICE_NAME.to_bytes_with_nul();
    if device != 0 {
        return INVALID_DEVICE;
    }
    if usize::try_from(len).map_or(true, |len| len < bytes.len()) {
        return INVALID_VALUE;
    }
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), name, bytes.len()) };
    SUCCESS
}

/// # Safety
///
/// `value` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    value: *mut c_int,
    attribute: c_uint,
    device: c_int,
) -> c_uint {
    if device != 0 {
        return INVALID_DEVICE;
    }
    let answer = match attribute {
        MULTIPROCESSOR_COUNT => MULTIPROCESSORS,
        COMPUTE_CAPABILITY_MAJOR => 9,
        COMPUTE_CAPABILITY_MINOR => 0,
        _ => return INVALID_VALUE,
    };
    unsafe { *value = answer };
    SUCCESS
}

/// The one context's handle.
fn context() -> *mut c_void {
    std::ptr::from_ref(&DEVICE).cast_mut().cast()
}

/// # Safety
///
/// `context_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(
    context_out: *mut *mut c_void,
    device: c_int,
) -> c_uint {
    if device != 0 {
        return INVALID_DEVICE;
    }
    unsafe { *context_out = context() };
    SUCCESS
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(device: c_int) -> c_uint {
    if device != 0 {
        return INVALID_DEVICE;
    }
    SUCCESS
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(context_in: *mut c_void) -> c_uint {
    if context_in != context() {
        return INVALID_HANDLE;
    }
    SUCCESS
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> c_uint {
    SUCCESS
}

/// # Safety
///
/// `address` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(address: *mut u64, bytes: usize) -> c_uint {
    // As the driver: no allocation of 0 bytes.
    let Some(len) = words(bytes).filter(|&len| len > 0) else {
        return INVALID_VALUE;
    };
    with_device(INVALID_VALUE, |device| {
        let index = device.memory.buffers.len();
        // Fresh memory holds a pattern no kernel makes, as a GPU's holds garbage.
        device.memory.buffers.push(vec![0x7fc0_dead; len]);
        unsafe { *address = ptx_sim::buffer_address(index) };
        SUCCESS
    })
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(address: u64) -> c_uint {
    with_device(INVALID_VALUE, |device| match allocated(device, address) {
        Some(index) => {
            device.memory.buffers[index] = Vec::new();
            SUCCESS
        }
        None => INVALID_VALUE,
    })
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(address: u64, value: c_uchar, bytes: usize) -> c_uint {
    with_device(INVALID_VALUE, |device| {
        match words(bytes).and_then(|len| words_at(device, address, len)) {
            Some(range) => {
                range.fill(u32::from_ne_bytes([value; 4]));
                SUCCESS
            }
            None => INVALID_VALUE,
        }
    })
}

/// # Safety
///
/// `source` holds `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    destination: u64,
    source: *const c_void,
    bytes: usize,
) -> c_uint {
    with_device(INVALID_VALUE, |device| {
        match words(bytes).and_then(|len| words_at(device, destination, len)) {
            Some(range) => {
                let from = unsafe { std::slice::from_raw_parts(source.cast::<u8>(), bytes) };
                for (word, chunk) in range.iter_mut().zip(from.chunks_exact(4)) {
                    *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
                SUCCESS
            }
            _ => INVALID_VALUE,
        }
    })
}

/// # Safety
///
/// `destination` has room for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(
    destination: *mut c_void,
    source: u64,
    bytes: usize,
) -> c_uint {
    with_device(INVALID_VALUE, |device| {
        match words(bytes).and_then(|len| words_at(device, source, len)) {
            Some(range) => {
                let to = unsafe { std::slice::from_raw_parts_mut(destination.cast::<u8>(), bytes) };
                for (chunk, word) in to.chunks_exact_mut(4).zip(range.iter()) {
                    chunk.copy_from_slice(&word.to_ne_bytes());
                }
                SUCCESS
            }
            _ => INVALID_VALUE,
        }
    })
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(destination: u64, source: u64, bytes: usize) -> c_uint {
    with_device(INVALID_VALUE, |device| {
        let Some(len) = words(bytes) else {
            return INVALID_VALUE;
        };
        let Some(from) = words_at(device, source, len) else {
            return INVALID_VALUE;
        };
        let copied = from.to_vec();
        match words_at(device, destination, len) {
            Some(to) => {
                to.copy_from_slice(&copied);
                SUCCESS
            }
            None => INVALID_VALUE,
        }
    })
}

/// # Safety
///
/// `module` is writable; `image` is a NUL-terminated PTX text.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut *mut c_void,
    image: *const c_void,
    _options: c_uint,
    _option_kinds: *mut c_uint,
    _option_values: *mut *mut c_void,
) -> c_uint {
    let Ok(text) = unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_str() else {
        return INVALID_IMAGE;
    };
    with_device(INVALID_IMAGE, |device| {
        device.modules.push(Some(ptx_sim::parse(text)));
        unsafe { *module = device.modules.len() as *mut c_void };
        SUCCESS
    })
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: *mut c_void) -> c_uint {
    with_device(INVALID_HANDLE, |device| {
        match (module as usize)
            .checked_sub(1)
            .and_then(|i| device.modules.get_mut(i))
        {
            Some(slot @ Some(_)) => {
                *slot = None;
                SUCCESS
            }
            _ => INVALID_HANDLE,
        }
    })
}

/// # Safety
///
/// `function` is writable; `name` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    function: *mut *mut c_void,
    module: *mut c_void,
    name: *const c_char,
) -> c_uint {
    let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return NOT_FOUND;
    };
    with_device(INVALID_HANDLE, |device| {
        let handle = module as usize;
        let Some(Some(loaded)) = handle.checked_sub(1).and_then(|i| device.modules.get(i)) else {
            return INVALID_HANDLE;
        };
        if !loaded.entries.contains_key(name) {
            return NOT_FOUND;
        }
        let key = (handle, name.to_string());
        let next = device.functions.len() + 1;
        let found = *device.function_handles.entry(key.clone()).or_insert(next);
        if found == next {
            device.functions.push(key);
        }
        unsafe { *function = found as *mut c_void };
        SUCCESS
    })
}

/// # Safety
///
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(
    function: *mut c_void,
    _attribute: c_uint,
    _value: c_int,
) -> c_uint {
    with_device(INVALID_HANDLE, |device| {
        if (function as usize)
            .checked_sub(1)
            .and_then(|i| device.functions.get(i))
            .is_some()
        {
            SUCCESS
        } else {
            INVALID_HANDLE
        }
    })
}

/// Runs the kernel at once, its block's threads one after another between barriers.
///
/// # Safety
///
/// `params` points to one pointer to a `u64` per parameter of the kernel.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    function: *mut c_void,
    grid_x: c_uint,
    grid_y: c_uint,
    grid_z: c_uint,
    block_x: c_uint,
    block_y: c_uint,
    block_z: c_uint,
    _shared_bytes: c_uint,
    _stream: *mut c_void,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> c_uint {
    // kiln's kernels are one-dimensional blocks and take no `extra`.
    if block_y != 1 || block_z != 1 || !extra.is_null() {
        return INVALID_VALUE;
    }
    with_device(LAUNCH_FAILED, |device| {
        let Some((module, name)) = (function as usize)
            .checked_sub(1)
            .and_then(|i| device.functions.get(i))
        else {
            return INVALID_HANDLE;
        };
        let Some(Some(loaded)) = device.modules.get(module - 1) else {
            return INVALID_HANDLE;
        };
        let Some(entry) = loaded.entries.get(name) else {
            return NOT_FOUND;
        };
        let entry = entry.clone();
        let values: Vec<u64> = (0..entry.params())
            .map(|i| unsafe { *(*params.add(i)).cast::<u64>() })
            .collect();
        ptx_sim::launch(
            &entry,
            [grid_x, grid_y, grid_z],
            block_x,
            &values,
            &mut device.memory,
        );
        SUCCESS
    })
}

/// The name and description of an error code, as static C strings.
fn describe(error: c_uint) -> Option<(&'static CStr, &'static CStr)> {
    Some(match error {
        SUCCESS => (c"CUDA_SUCCESS", c"no error"),
        INVALID_VALUE => (c"CUDA_ERROR_INVALID_VALUE", c"invalid argument"),
        NO_DEVICE => (
            c"CUDA_ERROR_NO_DEVICE",
            c"no CUDA-capable device is detected",
        ),
        INVALID_DEVICE => (c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal"),
        INVALID_IMAGE => (
            c"CUDA_ERROR_INVALID_IMAGE",
            c"device kernel image is invalid",
        ),
        INVALID_HANDLE => (c"CUDA_ERROR_INVALID_HANDLE", c"invalid resource handle"),
        NOT_FOUND => (c"CUDA_ERROR_NOT_FOUND", c"named symbol not found"),
        LAUNCH_FAILED => (
            c"CUDA_ERROR_LAUNCH_FAILED",
            c"unspecified launch failure (the simulator rejected the kernel)",
        ),
        _ => return None,
    })
}

/// # Safety
///
/// `text` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: c_uint, text: *mut *const c_char) -> c_uint {
    let Some((name, _)) = describe(error) else {
        return INVALID_VALUE;
    };
    unsafe { *text = name.as_ptr() };
    SUCCESS
}

/// # Safety
///
/// `text` is writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: c_uint, text: *mut *const c_char) -> c_uint {
    let Some((_, description)) = describe(error) else {
        return INVALID_VALUE;
    };
    unsafe { *text = description.as_ptr() };
    SUCCESS
}
