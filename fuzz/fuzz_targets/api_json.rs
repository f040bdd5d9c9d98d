//! Fuzzes the HTTP API's JSON request bodies: every body type, parsed as the
//! axum handlers parse them, then what they do with it before the engine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tzero::api::fuzzing::request_bodies(data);
});
