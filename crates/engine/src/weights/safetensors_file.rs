//! `.safetensors` checkpoints with the official key names (for example converted with
//! `safetensors.torch.save_file(torch.load(pt)["model"], …)`). The format is a JSON
//! header plus raw bytes; the safetensors crate validates offsets and lengths.
use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

pub fn tensors(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("bad safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::I16 => Kind::Int16,
            Dtype::I8 => Kind::Int8,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => bail!("tensor '{name}' has unsupported dtype {other:?}"),
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| anyhow!("tensor '{name}': {e}"))?;
        out.insert(name, t);
    }
    if out.is_empty() {
        bail!("the safetensors file holds no tensors")
    }
    Ok(out)
}
