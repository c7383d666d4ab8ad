//! The dashboard's files, embedded from `web/` so the binary needs nothing beside it.

use include_dir::{include_dir, Dir};

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web");

/// Scripts and styles only from this server; no inline code, no other origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An embedded file and its content type, by name (`setup.html`, `berth.css`, ...).
pub fn file(name: &str) -> Option<(&'static [u8], &'static str)> {
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    let file = WEB.get_file(name)?;
    let kind = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    Some((file.contents(), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_embedded_with_their_types() {
        assert_eq!(file("setup.html").unwrap().1, "text/html; charset=utf-8");
        assert_eq!(
            file("setup.js").unwrap().1,
            "text/javascript; charset=utf-8"
        );
        assert!(file("../Cargo.toml").is_none());
        assert!(file("missing.css").is_none());
    }

    #[test]
    fn pages_have_no_inline_scripts_or_styles() {
        let html = std::str::from_utf8(file("setup.html").unwrap().0).unwrap();
        assert!(!html.contains("<script>") && !html.contains("style="));
    }
}
