//! CUDA graphs: a fixed-shape piece of a frame's model work (the image encoder; a
//! tracking step once the memory bank is full) captured once and replayed as a single
//! launch. On a GPU, SAM 2 is bound by launching ~a thousand small kernels per frame,
//! not by arithmetic; a replay costs the host microseconds.
//!
//! A [`Graphed`] function owns static input buffers: `run` copies the arguments into them
//! (device-to-device), replays, and returns copies of the static outputs (the next replay
//! overwrites them). [`GraphCache`] captures a key once it repeats (`capture_gate`), so the
//! growing shapes of a video's first frames run eagerly and the steady state replays.
//! Built only with the CUDA shim (see the module above); the `cuda_graphs` knob
//! (`SAM2_TUI_CUDA_GRAPHS=0`) turns graphs off at run time.
use super::capture_gate::CaptureGate;
use tch::{Device, Tensor};

mod ffi {
    #[cfg(sam2_cuda_shim)]
    unsafe extern "C" {
        pub fn sam2_graph_new(
            device: i32,
            out: *mut *mut std::ffi::c_void,
            err: *mut std::ffi::c_char,
            len: usize,
        ) -> i32;
        pub fn sam2_graph_enter(g: *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
        pub fn sam2_graph_capture_begin(g: *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
        pub fn sam2_graph_capture_end(g: *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
        pub fn sam2_graph_exit(g: *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
        pub fn sam2_graph_replay(g: *mut std::ffi::c_void, err: *mut std::ffi::c_char, len: usize) -> i32;
        pub fn sam2_graph_free(g: *mut std::ffi::c_void);
    }
}

/// True when this build can capture graphs (it has the CUDA shim).
pub fn available() -> bool {
    cfg!(sam2_cuda_shim)
}

/// One captured graph with its own side stream.
struct CudaGraph {
    #[cfg_attr(not(sam2_cuda_shim), allow(dead_code))]
    raw: *mut std::ffi::c_void,
}

#[cfg(sam2_cuda_shim)]
use super::call;

// SAFETY (every call below): the shim's entry points never unwind (`shim/guarded.h`
// turns a C++ exception into status 0 and a message), write at most `n` bytes of message
// into the buffer `call` hands them, and take `raw`, which `sam2_graph_new` set to a live
// `Graph` this value owns until `Drop` frees it (a failed create leaves no `CudaGraph`).
#[cfg(sam2_cuda_shim)]
impl CudaGraph {
    fn new(device: usize) -> anyhow::Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: see above; `raw` outlives the call that writes it.
        call("graph create", |e, n| unsafe { ffi::sam2_graph_new(device as i32, &mut raw, e, n) })?;
        Ok(CudaGraph { raw })
    }
    fn enter(&self) -> anyhow::Result<()> {
        // SAFETY: see above.
        call("graph enter", |e, n| unsafe { ffi::sam2_graph_enter(self.raw, e, n) })
    }
    fn begin(&self) -> anyhow::Result<()> {
        // SAFETY: see above.
        call("graph capture", |e, n| unsafe { ffi::sam2_graph_capture_begin(self.raw, e, n) })
    }
    fn end(&self) -> anyhow::Result<()> {
        // SAFETY: see above.
        call("graph capture end", |e, n| unsafe { ffi::sam2_graph_capture_end(self.raw, e, n) })
    }
    fn exit(&self) -> anyhow::Result<()> {
        // SAFETY: see above.
        call("graph exit", |e, n| unsafe { ffi::sam2_graph_exit(self.raw, e, n) })
    }
    fn replay(&self) -> anyhow::Result<()> {
        // SAFETY: see above; the static inputs and outputs the replay reads and writes are
        // owned by the `Graphed` that owns this graph, so they outlive it.
        call("graph replay", |e, n| unsafe { ffi::sam2_graph_replay(self.raw, e, n) })
    }
}

#[cfg(not(sam2_cuda_shim))]
impl CudaGraph {
    fn new(_device: usize) -> anyhow::Result<Self> {
        anyhow::bail!("this build has no CUDA graph support")
    }
    fn enter(&self) -> anyhow::Result<()> {
        unreachable!()
    }
    fn begin(&self) -> anyhow::Result<()> {
        unreachable!()
    }
    fn end(&self) -> anyhow::Result<()> {
        unreachable!()
    }
    fn exit(&self) -> anyhow::Result<()> {
        unreachable!()
    }
    fn replay(&self) -> anyhow::Result<()> {
        unreachable!()
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `raw` is the live graph `new` made, freed exactly once, here; the free
        // catches every C++ exception itself.
        #[cfg(sam2_cuda_shim)]
        unsafe {
            ffi::sam2_graph_free(self.raw)
        }
    }
}

/// A function of device tensors, captured for one set of input shapes.
pub type Step<'a> = &'a dyn Fn(&[Tensor]) -> Vec<Tensor>;

pub struct Graphed {
    graph: CudaGraph,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

impl Graphed {
    /// Captures `f` on copies of `examples` (one eager warm-up run first, on the graph's
    /// stream, so library handles and workspaces exist before capture). An op that cannot
    /// be captured (a host sync) makes this an error, and the caller stays eager.
    pub fn capture(device: Device, examples: &[&Tensor], f: Step) -> anyhow::Result<Graphed> {
        let Device::Cuda(index) = device else { anyhow::bail!("CUDA graphs need a CUDA device, not {device:?}") };
        let graph = CudaGraph::new(index)?;
        let inputs: Vec<Tensor> = examples.iter().map(|t| t.copy()).collect();
        graph.enter()?;
        let captured = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> anyhow::Result<Vec<Tensor>> {
            drop(f(&inputs));
            graph.begin()?;
            let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&inputs)));
            // Always end the capture, also after a failed op, or the stream stays capturing.
            let ended = graph.end();
            let outputs = outputs.map_err(|p| anyhow::anyhow!("an op could not be captured: {}", panic_message(&p)))?;
            ended?;
            Ok(outputs)
        }));
        let exited = graph.exit();
        let outputs = captured.map_err(|p| anyhow::anyhow!("warm-up failed: {}", panic_message(&p)))??;
        exited?;
        Ok(Graphed { graph, inputs, outputs })
    }

    /// Copies `inputs` into the static buffers, replays, returns copies of the outputs.
    pub fn run(&mut self, inputs: &[&Tensor]) -> anyhow::Result<Vec<Tensor>> {
        anyhow::ensure!(
            inputs.len() == self.inputs.len(),
            "graph takes {} inputs, got {}",
            self.inputs.len(),
            inputs.len()
        );
        for (dst, src) in self.inputs.iter_mut().zip(inputs) {
            anyhow::ensure!(
                dst.size() == src.size() && dst.kind() == src.kind(),
                "graph input {:?} {:?} given {:?} {:?}",
                dst.size(),
                dst.kind(),
                src.size(),
                src.kind()
            );
            dst.f_copy_(src)?;
        }
        self.graph.replay()?;
        Ok(self.outputs.iter().map(|o| o.copy()).collect())
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Graphs by key (the input shapes), captured once a key repeats ([`CaptureGate`]: its
/// second consecutive use, or its use on two frames in a row once the caller marks frames
/// with [`GraphCache::next_frame`]); a key whose capture failed runs eagerly from then on.
pub struct GraphCache<K> {
    device: Device,
    enabled: bool,
    graphs: Vec<(K, Graphed)>,
    gate: CaptureGate<K>,
    failed: Vec<K>,
    max: usize,
    /// Replays and eager runs so far (for stats and tests).
    pub replays: usize,
    pub eager: usize,
}

impl<K: PartialEq + Clone + std::fmt::Debug> GraphCache<K> {
    /// `max` graphs at most (the oldest goes first); enabled only when `on` (the
    /// `cuda_graphs` knob), on a CUDA device, where graphs are [`available`].
    pub fn new(device: Device, max: usize, on: bool) -> Self {
        let enabled = on && matches!(device, Device::Cuda(_)) && available();
        GraphCache {
            device,
            enabled,
            graphs: vec![],
            gate: CaptureGate::new(),
            failed: vec![],
            max,
            replays: 0,
            eager: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `run(key, …)` would replay or capture a graph now rather than run eagerly.
    pub fn graphed_next(&self, key: &K) -> bool {
        self.enabled
            && !self.failed.contains(key)
            && (self.graphs.iter().any(|(k, _)| k == key) || self.gate.ready(key))
    }

    /// Counts a use of `key` that ran some other way (for the gate: a use like any other).
    pub fn saw(&mut self, key: K) {
        self.gate.used(key);
    }

    /// A new frame begins (for a cache called more than once a frame, with other keys).
    pub fn next_frame(&mut self) {
        self.gate.next_frame();
    }

    /// `f(inputs)`, through a graph when one exists or can be captured for `key`.
    pub fn run(&mut self, key: K, inputs: &[&Tensor], f: Step) -> Vec<Tensor> {
        if self.enabled && !self.failed.contains(&key) {
            if let Some(i) = self.graphs.iter().position(|(k, _)| *k == key) {
                match self.graphs[i].1.run(inputs) {
                    Ok(out) => {
                        self.replays += 1;
                        self.gate.used(key);
                        return out;
                    }
                    Err(e) => {
                        eprintln!("sam2-tui: CUDA graph for {key:?} failed to replay, running eagerly: {e:#}");
                        self.graphs.remove(i);
                        self.failed.push(key.clone());
                    }
                }
            } else if self.gate.ready(&key) {
                match Graphed::capture(self.device, inputs, f) {
                    Ok(mut g) => {
                        eprintln!("sam2-tui: captured a CUDA graph for {key:?}");
                        if self.graphs.len() >= self.max {
                            self.graphs.remove(0);
                        }
                        let out = g.run(inputs);
                        self.graphs.push((key.clone(), g));
                        if let Ok(out) = out {
                            self.replays += 1;
                            self.gate.used(key);
                            return out;
                        }
                    }
                    Err(e) => {
                        eprintln!("sam2-tui: cannot capture a CUDA graph for {key:?}, running eagerly: {e:#}");
                        self.failed.push(key.clone());
                    }
                }
            }
        }
        self.gate.used(key);
        self.eager += 1;
        let inputs: Vec<Tensor> = inputs.iter().map(|t| t.shallow_clone()).collect();
        f(&inputs)
    }
}
