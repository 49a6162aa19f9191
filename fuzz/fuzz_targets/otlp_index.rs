#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| spanwire::fuzzing::otlp_index(data));
