//! `cargo +nightly fuzz run protocol_decode`: the worker protocol decoder must answer any
//! byte string with a message or an error — never a panic, never an out-of-bounds claim.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sam2_api::protocol::{decode, read_frame, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, used)) = decode::<Request>(data) {
        assert!(used <= data.len());
    }
    let _ = decode::<Response>(data);
    let mut cur = std::io::Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<Response>(&mut cur) {}
});
