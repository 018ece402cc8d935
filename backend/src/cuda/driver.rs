//! The CUDA driver calls kiln makes, each wrapped so that a failure is a
//! [`CudaError`] naming the call, and each owned handle freed by `Drop`.
//!
//! Only cudarc's thin `result`/`sys` layer is used: its safe layer tracks events per
//! allocation, which a runtime that launches its kernels in order on one stream does
//! not need. The driver library is loaded lazily by cudarc on the first call and
//! cudarc panics if it is missing, so [`CudaDevice::open`] checks that it can be
//! loaded before making any call.

use super::CudaError;
use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;
use kiln_ir::GpuTarget;
use std::ffi::{c_void, CString};
use std::sync::Arc;

/// `result` with a failure turned into a [`CudaError::Driver`] naming `call`.
pub(crate) fn check<T>(call: &'static str, result: Result<T, DriverError>) -> Result<T, CudaError> {
    result.map_err(|err| CudaError::Driver {
        call,
        name: error_name(err),
        code: err.0 as u32,
    })
}

/// The `CUresult`'s name (`CUDA_ERROR_OUT_OF_MEMORY`).
fn error_name(err: DriverError) -> String {
    match err.error_name() {
        Ok(name) => name.to_string_lossy().into_owned(),
        // An error code newer than the driver's own table.
        Err(_) => format!("{:?}", err.0),
    }
}

/// An attribute of device `device`.
fn attribute(device: sys::CUdevice, attribute: sys::CUdevice_attribute) -> Result<u32, CudaError> {
    // SAFETY: `device` came from cuDeviceGet.
    let value = check("cuDeviceGetAttribute", unsafe {
        result::device::get_attribute(device, attribute)
    })?;
    // The attributes read here are counts and version numbers, never negative.
    Ok(u32::try_from(value).unwrap_or(0))
}

/// One GPU and its primary context, current on the thread that opened it; every
/// other handle (memory, modules) keeps it alive through an `Arc`.
#[derive(Debug)]
pub struct CudaDevice {
    ordinal: usize,
    device: sys::CUdevice,
    context: sys::CUcontext,
    name: String,
    /// Compute capability (major, minor).
    capability: (u32, u32),
    target: GpuTarget,
}

// SAFETY: a CUDA context may be used from any thread once it is made current there;
// every method that calls the driver on the device's behalf calls `bind` first, and
// the driver synchronises its own use of the context.
unsafe impl Send for CudaDevice {}
// SAFETY: as above; `CudaDevice` has no interior mutability of its own.
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Loads the driver, opens GPU `ordinal` and makes its primary context current.
    /// Fails with [`CudaError::DriverMissing`] on a machine without the driver, and
    /// [`CudaError::NoDevice`] when the driver sees no such GPU.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        // SAFETY: only tries to load the library by its candidate names.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::DriverMissing);
        }
        let no_device = |count: usize| CudaError::NoDevice { ordinal, count };
        match result::init() {
            // A driver without any GPU (a container without the device files).
            Err(err) if err.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => return Err(no_device(0)),
            other => check("cuInit", other)?,
        }
        let count = check("cuDeviceGetCount", result::device::get_count())?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(no_device(count));
        }
        let index = i32::try_from(ordinal).map_err(|_| no_device(count))?;
        let device = check("cuDeviceGet", result::device::get(index))?;
        let name = check("cuDeviceGetName", result::device::get_name(device))?;
        use sys::CUdevice_attribute::*;
        let major = attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let multiprocessors = attribute(device, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        // PTX for an architecture runs on that one and every later one (the driver
        // compiles it for the GPU), so the newest supported one not above the GPU's.
        let sm = major * 10 + minor;
        let Some(&arch) = GpuTarget::SUPPORTED_SM.iter().filter(|&&s| s <= sm).max() else {
            return Err(CudaError::Unsupported {
                ordinal,
                name,
                major,
                minor,
            });
        };
        // SAFETY: `device` came from cuDeviceGet; released in `Drop`.
        let context = check("cuDevicePrimaryCtxRetain", unsafe {
            result::primary_ctx::retain(device)
        })?;
        let opened = CudaDevice {
            ordinal,
            device,
            context,
            name,
            capability: (major, minor),
            target: GpuTarget {
                sm: arch,
                multiprocessors,
            },
        };
        opened.bind()?;
        Ok(Arc::new(opened))
    }

    /// Makes the device's context current on this thread, as every driver call on
    /// its behalf needs.
    pub fn bind(&self) -> Result<(), CudaError> {
        // SAFETY: the context is retained until `self` drops.
        check("cuCtxSetCurrent", unsafe {
            result::ctx::set_current(self.context)
        })
    }

    /// The ordinal it was opened with.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's name (`NVIDIA H100 80GB HBM3`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor): (9, 0) for an H100.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.capability
    }

    /// What to write PTX for: the newest architecture kiln supports that this GPU
    /// runs, and its multiprocessor count.
    pub fn target(&self) -> GpuTarget {
        self.target
    }

    /// Waits for everything launched on the device to finish; a kernel that failed
    /// while running is reported here.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.bind()?;
        check("cuCtxSynchronize", result::ctx::synchronize())
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: retained in `open`, released once. A failure cannot be reported
        // from a drop and leaves nothing to undo.
        let _ = unsafe { result::primary_ctx::release(self.device) };
    }
}

/// One device allocation of 32-bit words (every dtype's element on the GPU, as on
/// the CPU).
#[derive(Debug)]
pub(crate) struct DeviceWords {
    device: Arc<CudaDevice>,
    pointer: sys::CUdeviceptr,
    len: usize,
}

// SAFETY: the allocation is plain device memory; see `CudaDevice`.
unsafe impl Send for DeviceWords {}

impl DeviceWords {
    /// `len` zeroed words on `device`.
    pub fn zeroed(device: &Arc<CudaDevice>, len: usize) -> Result<DeviceWords, CudaError> {
        device.bind()?;
        // An empty buffer still gets a (never dereferenced) address: cuMemAlloc
        // refuses 0 bytes.
        let bytes = len.max(1).saturating_mul(4);
        // SAFETY: a plain allocation, freed in `Drop`.
        let pointer = check("cuMemAlloc", unsafe { result::malloc_sync(bytes) })?;
        let words = DeviceWords {
            device: Arc::clone(device),
            pointer,
            len,
        };
        // SAFETY: `pointer` holds `bytes` bytes.
        check("cuMemsetD8", unsafe {
            result::memset_d8_sync(pointer, 0, bytes)
        })?;
        Ok(words)
    }

    /// The device address, as a kernel's `.u64` parameter takes it.
    pub fn address(&self) -> u64 {
        self.pointer
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The device address of word `offset`, if `offset..offset + len` lies inside
    /// the allocation.
    fn at(&self, offset: usize, len: usize) -> Option<sys::CUdeviceptr> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| self.pointer + (offset as u64) * 4)
    }

    /// Copies `words` in at word `offset` (the range must lie inside the allocation).
    pub fn upload(&self, offset: usize, words: &[u32]) -> Result<(), CudaError> {
        let address = self
            .at(offset, words.len())
            .ok_or_else(|| outside(offset, words.len(), self.len))?;
        if words.is_empty() {
            return Ok(());
        }
        self.device.bind()?;
        // SAFETY: `at` checked that the range lies inside the allocation.
        check("cuMemcpyHtoD", unsafe {
            result::memcpy_htod_sync(address, words)
        })
    }

    /// Copies `len` words out from word `offset`, after everything launched before
    /// has finished.
    pub fn download(&self, offset: usize, len: usize) -> Result<Vec<u32>, CudaError> {
        let address = self
            .at(offset, len)
            .ok_or_else(|| outside(offset, len, self.len))?;
        let mut words = vec![0u32; len];
        if len == 0 {
            return Ok(words);
        }
        self.device.bind()?;
        // SAFETY: as in `upload`; the synchronous copy waits for earlier launches.
        check("cuMemcpyDtoH", unsafe {
            result::memcpy_dtoh_sync(&mut words, address)
        })?;
        Ok(words)
    }

    /// Copies `len` words from word `from` of `source` to word `offset` of this
    /// allocation (ordered after earlier launches).
    pub fn copy_from(
        &self,
        offset: usize,
        source: &DeviceWords,
        from: usize,
        len: usize,
    ) -> Result<(), CudaError> {
        let to = self
            .at(offset, len)
            .ok_or_else(|| outside(offset, len, self.len))?;
        let from = source
            .at(from, len)
            .ok_or_else(|| outside(from, len, source.len))?;
        if len == 0 {
            return Ok(());
        }
        self.device.bind()?;
        // SAFETY: `at` checked both ranges.
        check("cuMemcpyDtoD", unsafe {
            result::memcpy_dtod_sync(to, from, len * 4)
        })
    }
}

/// A copy that would leave its allocation: a kiln bug in the runtime's placement.
fn outside(offset: usize, len: usize, allocation: usize) -> CudaError {
    CudaError::Placement(format!(
        "a copy of words {offset}..{offset}+{len} leaves an allocation of {allocation} words"
    ))
}

impl Drop for DeviceWords {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed`, freed once; a failure cannot be reported
        // from a drop.
        if self.device.bind().is_ok() {
            let _ = unsafe { result::free_sync(self.pointer) };
        }
    }
}

/// A loaded PTX module.
#[derive(Debug)]
pub(crate) struct Module {
    device: Arc<CudaDevice>,
    handle: sys::CUmodule,
}

// SAFETY: see `CudaDevice`.
unsafe impl Send for Module {}

/// The most bytes of a JIT error log kept.
const LOG_BYTES: usize = 16 * 1024;

impl Module {
    /// Compiles and loads PTX `text` (cuModuleLoadDataEx): the driver's error log is
    /// part of the error when it rejects the text.
    pub fn load(device: &Arc<CudaDevice>, text: &str) -> Result<Module, CudaError> {
        let source = CString::new(text)
            .map_err(|_| CudaError::Module("the PTX text contains a NUL byte".to_string()))?;
        device.bind()?;
        let mut log = vec![0u8; LOG_BYTES];
        let mut options = [
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        ];
        // The driver reads a size option's value from the pointer's bits.
        let mut values = [log.as_mut_ptr().cast::<c_void>(), LOG_BYTES as *mut c_void];
        let mut handle: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: `source` is NUL-terminated text; the log buffer is LOG_BYTES long
        // and outlives the call; two options with two values.
        let loaded = unsafe {
            sys::cuModuleLoadDataEx(
                &mut handle,
                source.as_ptr().cast::<c_void>(),
                options.len() as u32,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        }
        .result();
        if let Err(err) = loaded {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            return Err(CudaError::PtxRejected {
                name: error_name(err),
                code: err.0 as u32,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            });
        }
        Ok(Module {
            device: Arc::clone(device),
            handle,
        })
    }

    /// The entry called `name`, set up to take `shared_bytes` of dynamic shared
    /// memory (past 48 KiB a kernel has to ask for it).
    pub fn function(&self, name: &str, shared_bytes: u32) -> Result<Function, CudaError> {
        let symbol = CString::new(name)
            .map_err(|_| CudaError::Module(format!("entry name {name:?} contains a NUL byte")))?;
        self.device.bind()?;
        // SAFETY: the module is loaded until `self` drops, and every `Function` is
        // used only while its executable holds the module.
        let handle = check("cuModuleGetFunction", unsafe {
            result::module::get_function(self.handle, symbol)
        })?;
        const DEFAULT_SHARED: u32 = 48 * 1024;
        if shared_bytes > DEFAULT_SHARED {
            let bytes = i32::try_from(shared_bytes).unwrap_or(i32::MAX);
            // SAFETY: `handle` is a function of the loaded module.
            check("cuFuncSetAttribute", unsafe {
                result::function::set_function_attribute(
                    handle,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes,
                )
            })?;
        }
        Ok(Function { handle })
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded in `load`, unloaded once, after every executable using its
        // functions dropped them (they are fields declared before the module).
        if self.device.bind().is_ok() {
            let _ = unsafe { result::module::unload(self.handle) };
        }
    }
}

/// An entry of a loaded [`Module`].
#[derive(Debug)]
pub(crate) struct Function {
    handle: sys::CUfunction,
}

// SAFETY: see `CudaDevice`.
unsafe impl Send for Function {}

impl Function {
    /// Launches the function on the default stream with one `.u64` parameter per
    /// address, in order.
    ///
    /// # Safety
    ///
    /// The module that holds the function must be loaded and its context current,
    /// and every address must be the start of an allocation at least as long as the
    /// kernel reads or writes through that parameter.
    pub unsafe fn launch(
        &self,
        grid: [u32; 3],
        block: u32,
        shared_bytes: u32,
        addresses: &[u64],
    ) -> Result<(), CudaError> {
        // cuLaunchKernel takes a pointer to each parameter's value.
        let mut params: Vec<*mut c_void> = addresses
            .iter()
            .map(|address| std::ptr::from_ref(address).cast_mut().cast::<c_void>())
            .collect();
        // SAFETY: the caller's promise; the values live until the call returns, and
        // the driver copies them at launch.
        check("cuLaunchKernel", unsafe {
            result::launch_kernel(
                self.handle,
                (grid[0], grid[1], grid[2]),
                (block, 1, 1),
                shared_bytes,
                std::ptr::null_mut(),
                &mut params,
            )
        })
    }
}
