//! Relay control frames from a peer: read without panic, within the frame limit, writing back to the same frames.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/wire/protocol.rs"]
mod protocol;

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::props::control_frames(data));
