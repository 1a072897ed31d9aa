//! `cargo +nightly fuzz run safetensors_header`: a `.safetensors` file is an 8-byte length,
//! a JSON header and the tensor bytes. Any input, framed as such a file, must give tensors
//! or an error — never a panic, never an allocation the header merely claims.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sam2_engine::weights::tensors_in;

fuzz_target!(|data: &[u8]| {
    // As given (the seeds are whole files: the mutations reach the length field too) …
    let _ = tensors_in(data);
    // … and with a length that matches, so mutated headers get past the format check.
    if let Some(end) = data.iter().position(|&b| b == b'\n') {
        let (header, body) = (&data[..end], &data[end + 1..]);
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(body);
        let _ = tensors_in(&file);
    }
});
