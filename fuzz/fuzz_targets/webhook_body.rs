//! cargo-fuzz entry of [`subcar_fuzz::webhook_body`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subcar_fuzz::webhook_body(data));
