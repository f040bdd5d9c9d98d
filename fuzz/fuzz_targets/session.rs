//! Fuzzes a whole client session (handshake and transmission) against an
//! in-memory export over a duplex stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tzero_nbd::fuzzing::session(data);
});
