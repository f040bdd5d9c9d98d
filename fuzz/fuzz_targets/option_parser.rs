//! Fuzzes the handshake-phase parsers (option header, client flags,
//! EXPORT_NAME, INFO/GO and META_CONTEXT payloads).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tzero_nbd::fuzzing::option_parsers(data);
});
