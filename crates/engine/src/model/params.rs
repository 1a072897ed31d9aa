//! Named parameters for the modules, taken out of a checkpoint by their reference names.
//! Loading is strict like the reference's `load_state_dict(strict=True)`: every module
//! asks for its tensors with the shape it expects, and whatever the checkpoint holds that
//! no module asked for is reported as unexpected.
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use tch::{Device, Kind, Tensor};

pub struct Params {
    tensors: BTreeMap<String, Tensor>,
    taken: RefCell<BTreeSet<String>>,
    problems: RefCell<Vec<String>>,
    device: Device,
    kind: Kind,
    /// The dtype of the weights that feed matmuls and convolutions. Under CUDA autocast
    /// the reference casts its fp32 weights to bf16 on every call; holding that cast
    /// once gives the very same values (round to nearest even either way) without a
    /// cast kernel per layer per frame. Otherwise `kind`.
    matmul_kind: Kind,
    /// Modules (key prefixes) kept in fp32 whatever `kind` is.
    fp32_modules: Vec<String>,
    /// Random-init mode: missing tensors are made up (and recorded) instead of reported.
    invented: Option<RefCell<BTreeMap<String, Tensor>>>,
}

/// A view of `Params` under a key prefix (like candle's VarBuilder `pp`).
#[derive(Clone, Copy)]
pub struct P<'a> {
    params: &'a Params,
    prefix: &'a str,
}

impl Params {
    /// `kind` is the floating dtype the modules compute in.
    pub fn new(tensors: BTreeMap<String, Tensor>, device: Device, kind: Kind) -> Self {
        Params {
            tensors,
            taken: RefCell::default(),
            problems: RefCell::default(),
            device,
            kind,
            matmul_kind: kind,
            fp32_modules: Vec::new(),
            invented: None,
        }
    }

    /// Weights of matmuls and convolutions in `kind` (the autocast dtype), see `matmul_kind`.
    pub fn with_matmul_kind(mut self, kind: Kind) -> Self {
        self.matmul_kind = kind;
        self
    }

    /// Keeps the modules under these key prefixes in fp32 (weights and arithmetic).
    pub fn with_fp32_modules(mut self, prefixes: &[&str]) -> Self {
        self.fp32_modules = prefixes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// An empty store that invents every tensor a module asks for (a random-init model:
    /// LayerNorm weights 1, biases 0, everything else N(0, 0.02)).
    pub fn inventing() -> Self {
        let mut p = Self::new(BTreeMap::new(), Device::Cpu, Kind::Float);
        p.invented = Some(RefCell::default());
        p
    }

    /// The tensors invented so far, by key.
    pub fn take_invented(&self) -> BTreeMap<String, Tensor> {
        self.invented.as_ref().map(|m| std::mem::take(&mut *m.borrow_mut())).unwrap_or_default()
    }

    pub fn root(&self) -> P<'_> {
        P { params: self, prefix: "" }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Fails with every missing key, wrong shape and unexpected key (at most a few named).
    pub fn finish(self) -> anyhow::Result<()> {
        let taken = self.taken.into_inner();
        let mut problems = self.problems.into_inner();
        let unexpected: Vec<&String> = self.tensors.keys().filter(|k| !taken.contains(*k)).collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "{} unexpected key(s): {}",
                unexpected.len(),
                unexpected.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            let n = problems.len();
            let shown: Vec<String> = problems.into_iter().take(6).collect();
            anyhow::bail!("checkpoint does not match the model: {}{}", shown.join("; "), if n > 6 { "; …" } else { "" })
        }
    }
}

impl<'a> P<'a> {
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A sub-view: `p.sub("blocks.3")`. The prefix string is leaked once per module at
    /// load time (a few hundred short strings per model), which keeps `P` Copy.
    pub fn sub(&self, name: impl AsRef<str>) -> P<'a> {
        let k: &'a str = Box::leak(self.key(name.as_ref()).into_boxed_str());
        P { params: self.params, prefix: k }
    }

    /// The tensor `name` with the expected shape, on the model's device and dtype.
    /// A missing or mis-shaped tensor is recorded (all are reported together by `finish`)
    /// and a zero tensor stands in so construction can continue.
    pub fn get(&self, name: &str, shape: &[i64]) -> Tensor {
        self.get_kind(name, shape, self.kind())
    }

    /// A weight or bias of a matmul or convolution (nn.Linear, nn.Conv2d, …): in the
    /// dtype autocast would cast it to, when the model runs under autocast.
    pub fn get_matmul(&self, name: &str, shape: &[i64]) -> Tensor {
        let kind = if self.in_fp32_module() { Kind::Float } else { self.params.matmul_kind };
        self.get_kind(name, shape, kind)
    }

    /// Like `get`, but kept in fp32 whatever the compute dtype (buffers used for
    /// positional encodings, which the reference always computes in fp32).
    pub fn get_f32(&self, name: &str, shape: &[i64]) -> Tensor {
        self.get_kind(name, shape, Kind::Float)
    }

    fn get_kind(&self, name: &str, shape: &[i64], kind: Kind) -> Tensor {
        let key = self.key(name);
        let p = self.params;
        if let Some(inv) = &p.invented {
            let t = if key.ends_with("gaussian_matrix") {
                Tensor::randn(shape, (Kind::Float, Device::Cpu))
            } else if key.ends_with("bias") {
                Tensor::zeros(shape, (Kind::Float, Device::Cpu))
            } else if key.contains("norm") && key.ends_with("weight") || key.ends_with(".gamma") {
                Tensor::ones(shape, (Kind::Float, Device::Cpu))
            } else {
                Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.02
            };
            inv.borrow_mut().insert(key, t.shallow_clone());
            return t.to_kind(kind);
        }
        match p.tensors.get(&key) {
            None => {
                p.problems.borrow_mut().push(format!("missing key {key}"));
                Tensor::zeros(shape, (kind, p.device))
            }
            Some(t) => {
                p.taken.borrow_mut().insert(key.clone());
                if t.size() != shape {
                    p.problems.borrow_mut().push(format!("{key} has shape {:?}, expected {:?}", t.size(), shape));
                    return Tensor::zeros(shape, (kind, p.device));
                }
                t.to_device(p.device).to_kind(kind).contiguous()
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.params.tensors.contains_key(&self.key(name))
    }

    pub fn device(&self) -> Device {
        self.params.device
    }

    /// The dtype this module computes in.
    pub fn kind(&self) -> Kind {
        if self.in_fp32_module() {
            Kind::Float
        } else {
            self.params.kind
        }
    }

    fn in_fp32_module(&self) -> bool {
        self.params.fp32_modules.iter().any(|m| self.prefix == m || self.prefix.starts_with(&format!("{m}.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Params {
        let t = |n: i64| Tensor::ones([n], (Kind::Float, Device::Cpu));
        let tensors = [
            ("sam_mask_decoder.iou_token.weight", 4),
            ("sam_mask_decoder_extra.weight", 2),
            ("memory_encoder.fuser.weight", 3),
        ];
        Params::new(tensors.iter().map(|(k, n)| (k.to_string(), t(*n))).collect(), Device::Cpu, Kind::BFloat16)
    }

    #[test]
    fn a_module_kept_in_fp32_gets_fp32_weights_and_the_rest_the_model_dtype() {
        let params = store().with_fp32_modules(&["sam_mask_decoder"]);
        let root = params.root();
        let decoder = root.sub("sam_mask_decoder");
        assert_eq!(decoder.kind(), Kind::Float);
        assert_eq!(decoder.sub("iou_token").get_matmul("weight", &[4]).kind(), Kind::Float);
        // A prefix match is by whole module names, not by string prefix.
        assert_eq!(root.sub("sam_mask_decoder_extra").get("weight", &[2]).kind(), Kind::BFloat16);
        assert_eq!(root.sub("memory_encoder").sub("fuser").get_matmul("weight", &[3]).kind(), Kind::BFloat16);
        assert_eq!(root.kind(), Kind::BFloat16);
        params.finish().unwrap();
    }
}
