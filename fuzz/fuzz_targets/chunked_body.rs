//! A chunked body from the public: passed on and read whole without panic or hang, within the limit, re-reading alike.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/proxy/mod.rs"]
mod proxy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::props::chunked_body(data));
