//! The device abstraction: every device-specific decision lives here, so MPS-only steps
//! stay behind one door and the model code is the same on CPU, CUDA and MPS.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
    Mps,
}

impl DeviceChoice {
    /// Resolves `auto` the way the reference demo does: cuda, then mps, then cpu.
    pub fn resolve(self) -> anyhow::Result<tch::Device> {
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

    pub fn of(device: tch::Device) -> Self {
        match device {
            tch::Device::Cpu => DeviceChoice::Cpu,
            tch::Device::Cuda(_) => DeviceChoice::Cuda,
            tch::Device::Mps => DeviceChoice::Mps,
            _ => DeviceChoice::Cpu,
        }
    }

    /// The next rung of the fallback ladder (mps → cpu, cuda → cpu).
    pub fn fallback(self) -> Option<DeviceChoice> {
        match self {
            DeviceChoice::Cpu => None,
            _ => Some(DeviceChoice::Cpu),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Mps => "mps",
        })
    }
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "mps" | "metal" => Ok(DeviceChoice::Mps),
            _ => Err(format!("unknown device '{s}' (expected auto, cpu, cuda or mps)")),
        }
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

/// Numeric precision of the engine. `Exact` is fp32 (bf16 only where the reference itself
/// rounds through bf16); `Bf16`/`Fp16` are the fast modes, labelled as such everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    /// The low-precision type of the mode (fp32 for exact).
    pub fn kind(self) -> tch::Kind {
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
    pub fn weights_kind(self, device: tch::Device) -> tch::Kind {
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
    /// arithmetic. `SAM2_TUI_FP32_HEADS=0` puts them back in the low type (for A/B runs).
    pub fn fp32_modules(self, device: tch::Device) -> Vec<&'static str> {
        let low_everywhere = self != Precision::Fp32 && self.autocast(device).is_none();
        let heads_off = std::env::var("SAM2_TUI_FP32_HEADS").is_ok_and(|v| v == "0");
        if low_everywhere && !heads_off {
            vec!["sam_prompt_encoder", "sam_mask_decoder", "obj_ptr_proj"]
        } else {
            vec![]
        }
    }

    /// The autocast type on `device`, if this mode computes under autocast there.
    pub fn autocast(self, device: tch::Device) -> Option<tch::Kind> {
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
        let ok = unsafe { sam2_shim_set_autocast_cuda(1, dtype, &mut was) } == 1;
        AutocastGuard { restore: ok.then_some(was == 1) }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        if let Some(was) = self.restore {
            let mut ignored = 0;
            unsafe { sam2_shim_set_autocast_cuda(was as std::os::raw::c_int, 0, &mut ignored) };
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "exact" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "half" => Ok(Precision::Fp16),
            _ => Err(format!("unknown precision '{s}' (expected fp32, bf16 or fp16)")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

extern "C" {
    fn sam2_shim_set_tf32(allow: std::os::raw::c_int) -> std::os::raw::c_int;
    fn sam2_shim_set_sdp_cudnn(enabled: std::os::raw::c_int) -> std::os::raw::c_int;
    fn sam2_shim_set_autocast_cuda(enabled: std::os::raw::c_int, dtype: std::os::raw::c_int, was_enabled: *mut std::os::raw::c_int) -> std::os::raw::c_int;
}

/// Lets fp32 matmuls and convolutions on a CUDA device use TF32, as the reference's
/// CUDA setups do (`torch.backends.cuda.matmul.allow_tf32 = True`). Off with
/// `SAM2_TUI_TF32=0` (strict fp32, slower). Also picks the attention kernels (below).
/// Returns whether TF32 is on.
pub fn configure_cuda_math(device: tch::Device) -> bool {
    if !matches!(device, tch::Device::Cuda(_)) {
        return false;
    }
    let allow = std::env::var("SAM2_TUI_TF32").map_or(true, |v| v != "0");
    // libtorch prefers cuDNN's attention kernels on Hopper; FlashAttention is faster for
    // SAM 2's shapes (memory attention: one head of 256 over ~29k keys, 0.37 vs 0.65 ms
    // on an H200) and the masks still agree with the reference's on > 99.9 % of pixels.
    // `SAM2_TUI_CUDNN_ATTENTION=1` gives libtorch its choice back.
    let cudnn_attention = std::env::var("SAM2_TUI_CUDNN_ATTENTION").is_ok_and(|v| v == "1");
    unsafe { sam2_shim_set_sdp_cudnn(cudnn_attention as std::os::raw::c_int) };
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

/// The precision asked for. `auto` (the default) is what the official SAM 2 demo and
/// notebooks use on each device: bf16 autocast on CUDA (`torch.autocast("cuda",
/// dtype=torch.bfloat16)` around every call), fp32 on the CPU, and fp32 on MPS too: the
/// demo's predictor only autocasts on CUDA, MPS's bf16 needs macOS 14 and its kernels are
/// where the known MPS crashes live, so the exact mode is the safe default there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    #[default]
    Auto,
    Fp32,
    Bf16,
    Fp16,
}

impl PrecisionChoice {
    /// The precision on `device` (resolved: auto means the device `auto` finds here).
    pub fn resolve(self, device: DeviceChoice) -> Precision {
        match self {
            PrecisionChoice::Fp32 => Precision::Fp32,
            PrecisionChoice::Bf16 => Precision::Bf16,
            PrecisionChoice::Fp16 => Precision::Fp16,
            PrecisionChoice::Auto => match device {
                DeviceChoice::Cuda => Precision::Bf16,
                DeviceChoice::Cpu | DeviceChoice::Mps => Precision::Fp32,
                DeviceChoice::Auto => match DeviceChoice::Auto.resolve() {
                    Ok(tch::Device::Cuda(_)) => Precision::Bf16,
                    _ => Precision::Fp32,
                },
            },
        }
    }
}

/// An explicit precision (bench rows, scripts) as a choice.
impl From<Precision> for PrecisionChoice {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Fp32 => PrecisionChoice::Fp32,
            Precision::Bf16 => PrecisionChoice::Bf16,
            Precision::Fp16 => PrecisionChoice::Fp16,
        }
    }
}

impl FromStr for PrecisionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PrecisionChoice::Auto);
        }
        match s.parse::<Precision>() {
            Ok(Precision::Fp32) => Ok(PrecisionChoice::Fp32),
            Ok(Precision::Bf16) => Ok(PrecisionChoice::Bf16),
            Ok(Precision::Fp16) => Ok(PrecisionChoice::Fp16),
            Err(_) => Err(format!("unknown precision '{s}' (expected auto, fp32, bf16 or fp16)")),
        }
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrecisionChoice::Auto => "auto",
            PrecisionChoice::Fp32 => "fp32",
            PrecisionChoice::Bf16 => "bf16",
            PrecisionChoice::Fp16 => "fp16",
        })
    }
}

#[cfg(test)]
mod precision_choice_tests {
    use super::*;

    #[test]
    fn auto_precision_is_what_the_official_demo_uses_on_each_device() {
        assert_eq!(PrecisionChoice::Auto.resolve(DeviceChoice::Cuda), Precision::Bf16);
        assert_eq!(PrecisionChoice::Auto.resolve(DeviceChoice::Cpu), Precision::Fp32);
        assert_eq!(PrecisionChoice::Auto.resolve(DeviceChoice::Mps), Precision::Fp32);
        assert_eq!(PrecisionChoice::Bf16.resolve(DeviceChoice::Cpu), Precision::Bf16, "an explicit choice stays");
        assert_eq!("auto".parse::<PrecisionChoice>(), Ok(PrecisionChoice::Auto));
    }
}
