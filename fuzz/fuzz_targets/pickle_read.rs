//! `cargo +nightly fuzz run pickle_read`: the checkpoint pickle VM must answer any bytes
//! with a value or an error — never a panic, never memory beyond what the input holds.
//! Each input is read three ways: as a pickle; as a whole file (the torch.save seeds reach
//! the zip reader); and as the `data.pkl` of an archive whose storages `data/0`…`data/7`
//! exist, so the tensor views a mutated pickle describes are cut out of real bytes (a
//! mutation inside a real archive would only fail its CRC).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sam2_engine::weights::{pickle, tensors_in};
use std::io::Write;

fn archive_around(pkl: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pkl).unwrap();
    for key in 0..8u8 {
        z.start_file(format!("archive/data/{key}"), opts).unwrap();
        z.write_all(&[key; 256]).unwrap();
    }
    z.finish().unwrap();
    buf.into_inner()
}

fuzz_target!(|data: &[u8]| {
    let _ = pickle::unpickle(data);
    let _ = tensors_in(data);
    if data.first() == Some(&0x80) {
        let _ = tensors_in(&archive_around(data));
    }
});
