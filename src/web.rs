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

    fn text(name: &str) -> &'static str {
        std::str::from_utf8(file(name).unwrap().0).unwrap()
    }

    #[test]
    fn pages_have_no_inline_scripts_or_styles() {
        for page in ["setup.html", "index.html"] {
            let html = text(page);
            assert!(
                !html.contains("<script>") && !html.contains("<style"),
                "{page}"
            );
            assert!(!html.contains("style="), "{page}");
            // No event-handler attributes (onclick=, onload=, ...).
            let handler = html.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "{page} has an inline event handler");
        }
    }

    /// Every `/assets/X` a page names and every module a script imports is embedded,
    /// so the dashboard works with no other server (air-gapped).
    #[test]
    fn everything_the_pages_load_is_embedded() {
        let mut names = Vec::new();
        for page in ["setup.html", "index.html"] {
            for part in text(page).split("/assets/").skip(1) {
                names.push(part.split('"').next().unwrap().to_string());
            }
        }
        for script in WEB
            .files()
            .filter(|f| f.path().extension() == Some("js".as_ref()))
        {
            let code = script.contents_utf8().unwrap();
            for part in code.split("from \"./").skip(1) {
                names.push(part.split('"').next().unwrap().to_string());
            }
        }
        assert!(names.contains(&"tokens.js".to_string()), "{names:?}");
        for name in names {
            assert!(
                file(&name).is_some(),
                "{name} is referenced but not embedded"
            );
        }
    }
}
