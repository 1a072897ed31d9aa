//! Compiles the engine's C++ shims against libtorch's headers and links its tests the way
//! the binary is linked (`torch_lib.rs`).
include!("torch_lib.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo::rustc-check-cfg=cfg(sam2_cuda_shim)");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-env-changed=PATH");
    let Some(lib) = torch_lib_dir() else {
        println!("cargo:warning=torch lib directory not found; run `make build` (it sets up the environment)");
        return;
    };
    println!("cargo:rustc-link-search=native={lib}");
    build_memory_shim(&lib);
    build_cuda_graph_shim(&lib);
    link_torch_runtime(&lib);
}

/// Compiles the worker's C++ memory shim (src/worker/shim) and the profiler shim
/// (src/trace) against the same libtorch headers tch links, so heartbeats can report
/// MPS/CUDA allocator memory and a propagation can be traced; and the CPU attention
/// kernel (src/cpu), which calls the sgemm libtorch exports on x86-64 Linux. They need no CUDA
/// headers (it goes through c10::DeviceAllocator), so it builds on CPU-only Linux and macOS.
fn build_memory_shim(lib: &str) {
    let shim = "src/worker/shim/memory_shim.cpp";
    let trace = "src/trace/shim.cpp";
    let attention = "src/cpu/attention.cpp";
    println!("cargo:rerun-if-changed={shim}");
    println!("cargo:rerun-if-changed={trace}");
    println!("cargo:rerun-if-changed={attention}");
    println!("cargo:rerun-if-changed=src/shim/guarded.h");
    let include = std::path::Path::new(lib).join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(shim)
        .file(trace)
        .file(attention)
        .include(&include)
        .include("src/shim")
        .std("c++17")
        .warnings(false);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        build.define("_GLIBCXX_USE_CXX11_ABI", "1");
    }
    build.compile("sam2_memory_shim");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
}

/// The CUDA runtime headers: `$CUDA_HOME/include`, else those of the pip wheels that came
/// with torch (`nvidia/cu13` or `nvidia/cuda_runtime`), else /usr/local/cuda.
fn cuda_include(lib: &str) -> Option<std::path::PathBuf> {
    let site = std::path::Path::new(lib).join("../..");
    let mut candidates: Vec<std::path::PathBuf> =
        std::env::var("CUDA_HOME").map(|h| vec![std::path::Path::new(&h).join("include")]).unwrap_or_default();
    candidates.extend([
        site.join("nvidia/cu13/include"),
        site.join("nvidia/cuda_runtime/include"),
        "/usr/local/cuda/include".into(),
    ]);
    candidates.into_iter().find(|d| d.join("cuda_runtime_api.h").exists())
}

/// Compiles the CUDA-graph shim (src/cuda) where libtorch has CUDA and the CUDA
/// headers are present, and sets `cfg(sam2_cuda_shim)`; elsewhere frames run eagerly.
fn build_cuda_graph_shim(lib: &str) {
    let shim = "src/cuda/shim.cpp";
    let fused = "src/cuda/fused.cpp";
    let attention = "src/cuda/attention.cpp";
    println!("cargo:rerun-if-changed={shim}");
    println!("cargo:rerun-if-changed={fused}");
    println!("cargo:rerun-if-changed={attention}");
    if !std::path::Path::new(&format!("{lib}/libtorch_cuda.so")).exists() {
        return;
    }
    let Some(cuda) = cuda_include(lib) else {
        println!("cargo:warning=CUDA headers not found: CUDA graphs disabled (set CUDA_HOME)");
        return;
    };
    let include = std::path::Path::new(lib).join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(shim)
        .file(fused)
        .file(attention)
        .include(&include)
        .include(&cuda)
        .include("src/shim")
        .std("c++17")
        .warnings(false)
        .define("_GLIBCXX_USE_CXX11_ABI", "1");
    build.compile("sam2_cuda_shim");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-cfg=sam2_cuda_shim");
}
