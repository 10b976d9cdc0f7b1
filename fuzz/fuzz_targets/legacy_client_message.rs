//! cargo-fuzz entry of [`subcar_fuzz::legacy_client_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subcar_fuzz::legacy_client_message(data));
