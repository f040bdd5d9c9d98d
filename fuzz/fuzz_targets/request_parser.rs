//! Fuzzes request-header parsing and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tzero_nbd::fuzzing::request_parser(data);
});
