// Shared by the engine's build script and the binary's (`include!`d by both): where
// libtorch's shared libraries are, and the link arguments that let a binary or test find
// them without LD_LIBRARY_PATH. Link arguments apply only to the package whose build
// script prints them, so every package with binaries or tests prints its own.

fn torch_lib_dir() -> Option<String> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(format!("{dir}/lib"));
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args(["-c", "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Makes the package's binaries and tests find libtorch without LD_LIBRARY_PATH, and
/// keeps libtorch_cuda linked: nothing in our code references a CUDA symbol, so with the
/// default `--as-needed` the linker would drop it and CUDA would report "unavailable".
fn link_torch_runtime(lib: &str) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" && std::path::Path::new(&format!("{lib}/libtorch_cuda.so")).exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
