//! A request head from the public: parsed without panic, and what the front door forwards parses again to the same request.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/proxy/mod.rs"]
mod proxy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::props::request_head(data));
