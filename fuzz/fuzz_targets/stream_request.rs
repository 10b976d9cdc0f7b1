//! cargo-fuzz entry of [`subcar_fuzz::stream_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subcar_fuzz::stream_request(data));
