//! A response head from a tunnel's service: parsed without panic, and sent on as a head that parses again alike.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/proxy/mod.rs"]
mod proxy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first byte says whether the request was a HEAD.
    if let Some((first, head)) = data.split_first() {
        proxy::props::response_head(head, first & 1 == 1);
    }
});
