//! The device abstraction: every device-specific decision lives here, so MPS-only steps
//! stay behind one door and the model code is the same on CPU, CUDA and MPS. The names
//! (`DeviceChoice`, `Precision`, `PrecisionChoice`) are the API crate's; this module says
//! what they mean to libtorch.
pub use sam2_api::device::{DeviceChoice, Precision, PrecisionChoice};
use sam2_api::tuning::Tuning;

/// What a device choice means on this machine.
pub trait DeviceChoiceExt {
    /// Resolves `auto` the way the reference demo does: cuda, then mps, then cpu.
    fn resolve(self) -> anyhow::Result<tch::Device>;
}

impl DeviceChoiceExt for DeviceChoice {
    fn resolve(self) -> anyhow::Result<tch::Device> {
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda => {
                anyhow::ensure!(tch::Cuda::is_available(), "device cuda requested but CUDA is not available");
                Ok(tch::Device::Cuda(0))
            }
            DeviceChoice::Mps => {
                anyhow::ensure!(tch::utils::has_mps(), "device mps requested but MPS is not available");
                Ok(tch::Device::Mps)
            }
            DeviceChoice::Auto => Ok(if tch::Cuda::is_available() {
                tch::Device::Cuda(0)
            } else if tch::utils::has_mps() {
                tch::Device::Mps
            } else {
                tch::Device::Cpu
            }),
        }
    }
}

/// The choice that names `device`.
pub fn choice_of(device: tch::Device) -> DeviceChoice {
    match device {
        tch::Device::Cpu => DeviceChoice::Cpu,
        tch::Device::Cuda(_) => DeviceChoice::Cuda,
        tch::Device::Mps => DeviceChoice::Mps,
        _ => DeviceChoice::Cpu,
    }
}

/// Whether work on `device` takes the MPS branches: the real cos/sin RoPE (MPS has no
/// complex dtype), pixel normalisation without float64 (MPS has none), no CPU-only
/// kernels. True on MPS, and on the CPU when `SAM2_TUI_EMULATE_MPS=1` asks it to run those
/// branches so their arithmetic can be checked where no Mac is (the parity tests do).
/// The one place the model code asks; every other device keeps its own path.
pub fn takes_mps_branches(device: tch::Device) -> bool {
    match device {
        tch::Device::Mps => true,
        tch::Device::Cpu => emulating_mps(),
        _ => false,
    }
}

/// `SAM2_TUI_EMULATE_MPS=1`, read once: a process takes one set of branches throughout
/// (tables built at load must match the ones used per frame).
pub fn emulating_mps() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SAM2_TUI_EMULATE_MPS").is_ok_and(|v| v == "1"))
}

/// The CPU's name for the user: says when it runs the MPS branches, so a figure measured
/// that way is never mistaken for a plain CPU run.
pub fn cpu_label(threads: i32) -> String {
    if emulating_mps() {
        format!("CPU (MPS arithmetic, {threads} threads)")
    } else {
        format!("CPU ({threads} threads)")
    }
}

/// What a precision means to libtorch.
pub trait PrecisionExt: Copy {
    /// The low-precision type of the mode (fp32 for exact).
    fn kind(self) -> tch::Kind;
    /// The type the weights are held in on `device`.
    fn weights_kind(self, device: tch::Device) -> tch::Kind;
    /// Key prefixes of the modules that stay in fp32 in this mode on `device`.
    fn fp32_modules(self, device: tch::Device) -> Vec<&'static str>;
    /// The autocast type on `device`, if this mode computes under autocast there.
    fn autocast(self, device: tch::Device) -> Option<tch::Kind>;
}

impl PrecisionExt for Precision {
    /// The low-precision type of the mode (fp32 for exact).
    fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
            Precision::Fp16 => tch::Kind::Half,
        }
    }

    /// The type the weights are held in on `device`. On CUDA the fast modes keep fp32
    /// weights and compute under autocast, as the reference's CUDA path does: matmuls and
    /// convolutions in bf16/fp16, norms, softmax and the residual stream in fp32, so the
    /// masks stay within a hair of the reference's. On the CPU and MPS everything is held
    /// in the low type (there it is about memory bandwidth and native arithmetic).
    fn weights_kind(self, device: tch::Device) -> tch::Kind {
        match self.autocast(device) {
            Some(_) => tch::Kind::Float,
            None => self.kind(),
        }
    }

    /// Key prefixes of the modules that stay in fp32 in this mode on `device`: in the
    /// pure low-precision modes (CPU, MPS), the SAM heads (prompt encoder, mask decoder,
    /// object-pointer projection). Their rounding is what moves mask pixels across 0:
    /// over the base_plus parity journal, bf16 heads agree with exact mode on 99.23 % of
    /// pixels and fp32 heads on 99.66 %, while fp32 memory attention or memory encoder
    /// change nothing (99.18 %, 99.16 %). The heads are a few percent of a frame's
    /// arithmetic. The `fp32_heads` knob (`Tuning`) puts them back in the low type (for
    /// A/B runs): the model then asks for no fp32 modules.
    fn fp32_modules(self, device: tch::Device) -> Vec<&'static str> {
        let low_everywhere = self != Precision::Fp32 && self.autocast(device).is_none();
        if low_everywhere {
            vec!["sam_prompt_encoder", "sam_mask_decoder", "obj_ptr_proj"]
        } else {
            vec![]
        }
    }

    /// The autocast type on `device`, if this mode computes under autocast there.
    fn autocast(self, device: tch::Device) -> Option<tch::Kind> {
        (matches!(device, tch::Device::Cuda(_)) && self != Precision::Fp32).then_some(self.kind())
    }
}

/// CUDA autocast on this thread while alive (autocast state is per thread); restores the
/// previous state on drop. A no-op for `None`.
pub struct AutocastGuard {
    restore: Option<bool>,
}

impl AutocastGuard {
    pub fn new(kind: Option<tch::Kind>) -> Self {
        let Some(kind) = kind else { return AutocastGuard { restore: None } };
        let mut was = 0;
        let dtype = if kind == tch::Kind::Half { 1 } else { 0 };
        // SAFETY: an out-pointer to a live local; the shim only toggles thread-local state.
        let ok = unsafe { sam2_shim_set_autocast_cuda(1, dtype, &mut was) } == 1;
        AutocastGuard { restore: ok.then_some(was == 1) }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        if let Some(was) = self.restore {
            let mut ignored = 0;
            // SAFETY: as in `new`.
            unsafe { sam2_shim_set_autocast_cuda(was as std::os::raw::c_int, 0, &mut ignored) };
        }
    }
}

extern "C" {
    fn sam2_shim_set_tf32(allow: std::os::raw::c_int) -> std::os::raw::c_int;
    fn sam2_shim_set_sdp_cudnn(enabled: std::os::raw::c_int) -> std::os::raw::c_int;
    fn sam2_shim_set_autocast_cuda(
        enabled: std::os::raw::c_int,
        dtype: std::os::raw::c_int,
        was_enabled: *mut std::os::raw::c_int,
    ) -> std::os::raw::c_int;
}

/// Lets fp32 matmuls and convolutions on a CUDA device use TF32, as the reference's
/// CUDA setups do (`torch.backends.cuda.matmul.allow_tf32 = True`). Off with the `tf32`
/// knob (strict fp32, slower). Also picks the attention kernels (below). Returns whether
/// TF32 is on.
pub fn configure_cuda_math(device: tch::Device, tuning: &Tuning) -> bool {
    if !matches!(device, tch::Device::Cuda(_)) {
        return false;
    }
    let allow = tuning.tf32;
    // libtorch prefers cuDNN's attention kernels on Hopper; FlashAttention is faster for
    // SAM 2's shapes (memory attention: one head of 256 over ~29k keys, 0.37 vs 0.65 ms
    // on an H200) and the masks still agree with the reference's on > 99.9 % of pixels.
    // The `cudnn_attention` knob gives libtorch its choice back.
    let cudnn_attention = tuning.cudnn_attention;
    // SAFETY: both shim calls take a plain int and set a process-wide libtorch flag
    // (`at::globalContext()`); they hold no pointers and never unwind into Rust (each
    // catches every C++ exception, `worker/shim/memory_shim.cpp`).
    unsafe { sam2_shim_set_sdp_cudnn(cudnn_attention as std::os::raw::c_int) };
    // SAFETY: as above.
    unsafe { sam2_shim_set_tf32(allow as std::os::raw::c_int) == 1 && allow }
}

/// Whether the CPU does bf16 arithmetic natively (x86: avx512_bf16 or amx_bf16; Arm: the
/// bf16 extension). Without it libtorch's bf16 matmuls fall back to a slow generic path
/// (measured on an AVX2-only EPYC: about 4x slower than fp32), so the CPU fast mode only
/// pays where this is true.
pub fn cpu_native_bf16() -> bool {
    #[cfg(target_os = "macos")]
    {
        std::process::Command::new("sysctl")
            .args(["-n", "hw.optional.arm.FEAT_BF16"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
    }
    #[cfg(not(target_os = "macos"))]
    {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        info.lines()
            .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
            .flat_map(|l| l.split_whitespace())
            .any(|f| matches!(f, "avx512_bf16" | "amx_bf16" | "bf16"))
    }
}

/// What `auto` precision means on this machine.
pub trait PrecisionChoiceExt {
    /// The precision on `device` (resolved: auto means the device `auto` finds here).
    fn resolve(self, device: DeviceChoice) -> Precision;
}

impl PrecisionChoiceExt for PrecisionChoice {
    fn resolve(self, device: DeviceChoice) -> Precision {
        self.resolve_with(device, || matches!(DeviceChoice::Auto.resolve(), Ok(tch::Device::Cuda(_))))
    }
}
