//! CPU-only compute paths that libtorch's generic kernels leave on the table.
pub mod attention;
