//! cargo-fuzz entry of [`subcar_fuzz::document`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subcar_fuzz::document(data));
