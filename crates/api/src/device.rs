//! The device and precision names every layer shares (CLI flags, config files, the worker
//! protocol). What they mean to libtorch (`tch::Device`, kinds, autocast) lives in the
//! engine's `device` module, so this crate links no libtorch.
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
    /// The next choice of the console's precision key: auto → fp32 → bf16 → fp16 → auto.
    pub fn next(self) -> PrecisionChoice {
        match self {
            PrecisionChoice::Auto => PrecisionChoice::Fp32,
            PrecisionChoice::Fp32 => PrecisionChoice::Bf16,
            PrecisionChoice::Bf16 => PrecisionChoice::Fp16,
            PrecisionChoice::Fp16 => PrecisionChoice::Auto,
        }
    }

    /// The precision on `device`. `auto` on `auto` depends on the device `auto` finds on
    /// this machine, which only the engine can tell: `auto_finds_cuda` answers it.
    pub fn resolve_with(self, device: DeviceChoice, auto_finds_cuda: impl FnOnce() -> bool) -> Precision {
        match self {
            PrecisionChoice::Fp32 => Precision::Fp32,
            PrecisionChoice::Bf16 => Precision::Bf16,
            PrecisionChoice::Fp16 => Precision::Fp16,
            PrecisionChoice::Auto => match device {
                DeviceChoice::Cuda => Precision::Bf16,
                DeviceChoice::Cpu | DeviceChoice::Mps => Precision::Fp32,
                DeviceChoice::Auto if auto_finds_cuda() => Precision::Bf16,
                DeviceChoice::Auto => Precision::Fp32,
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
        assert_eq!(PrecisionChoice::Auto.resolve_with(DeviceChoice::Cuda, || false), Precision::Bf16);
        assert_eq!(PrecisionChoice::Auto.resolve_with(DeviceChoice::Cpu, || true), Precision::Fp32);
        assert_eq!(PrecisionChoice::Auto.resolve_with(DeviceChoice::Mps, || true), Precision::Fp32);
        assert_eq!(
            PrecisionChoice::Bf16.resolve_with(DeviceChoice::Cpu, || true),
            Precision::Bf16,
            "an explicit choice stays"
        );
        assert_eq!("auto".parse::<PrecisionChoice>(), Ok(PrecisionChoice::Auto));
    }
}
