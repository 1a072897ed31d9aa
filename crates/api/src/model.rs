//! The model's names: the four sizes and two versions of SAM 2, as every layer spells
//! them (CLI flags, config files, the worker protocol, masks.json).
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ModelSize {
    Tiny,
    Small,
    BasePlus,
    Large,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelVersion {
    #[serde(rename = "2.0")]
    V2_0,
    #[serde(rename = "2.1")]
    V2_1,
}

impl ModelSize {
    pub const ALL: [ModelSize; 4] = [ModelSize::Tiny, ModelSize::Small, ModelSize::BasePlus, ModelSize::Large];

    pub fn name(self) -> &'static str {
        match self {
            ModelSize::Tiny => "tiny",
            ModelSize::Small => "small",
            ModelSize::BasePlus => "base_plus",
            ModelSize::Large => "large",
        }
    }
    /// The letter used in the official config names (`sam2.1_hiera_b+.yaml`).
    pub fn letter(self) -> &'static str {
        match self {
            ModelSize::Tiny => "t",
            ModelSize::Small => "s",
            ModelSize::BasePlus => "b+",
            ModelSize::Large => "l",
        }
    }
    /// The next size in the console's `m` cycle.
    pub fn next(self) -> ModelSize {
        let i = ModelSize::ALL.iter().position(|&s| s == self).unwrap();
        ModelSize::ALL[(i + 1) % 4]
    }
    pub fn smaller(self) -> Option<ModelSize> {
        let i = ModelSize::ALL.iter().position(|&s| s == self).unwrap();
        (i > 0).then(|| ModelSize::ALL[i - 1])
    }
}

impl fmt::Display for ModelSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "tiny" | "t" => Ok(ModelSize::Tiny),
            "small" | "s" => Ok(ModelSize::Small),
            "base_plus" | "b+" | "base" | "baseplus" => Ok(ModelSize::BasePlus),
            "large" | "l" => Ok(ModelSize::Large),
            _ => Err(format!("unknown model size '{s}' (expected tiny, small, base_plus or large)")),
        }
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelVersion::V2_0 => "2.0",
            ModelVersion::V2_1 => "2.1",
        })
    }
}

impl FromStr for ModelVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2" | "2.0" | "sam2" => Ok(ModelVersion::V2_0),
            "2.1" | "sam2.1" => Ok(ModelVersion::V2_1),
            _ => Err(format!("unknown SAM version '{s}' (expected 2.0 or 2.1)")),
        }
    }
}
