//! Links the sam2-tui binary and its tests so they find libtorch without LD_LIBRARY_PATH
//! and keep libtorch_cuda (the engine's build script compiles the C++ shims).
include!("crates/engine/torch_lib.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-changed=crates/engine/torch_lib.rs");
    match torch_lib_dir() {
        Some(lib) => link_torch_runtime(&lib),
        None => println!("cargo:warning=torch lib directory not found; run `make build` (it sets up the environment)"),
    }
}
