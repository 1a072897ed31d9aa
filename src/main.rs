fn main() {
    println!("sam2-tui {}", env!("CARGO_PKG_VERSION"));
}
