//! Token text from any client: parsed without panic, and a token that parses shows as text that parses alike.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/token.rs"]
mod token;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        token::props::token_text(text);
    }
});
