//! Text that others chose (paths, headers, names, audit details) made safe to show on a terminal.

use std::borrow::Cow;
use std::fmt::Write;

use crate::text;

/// `text` as a terminal may show it: C0 and C1 control characters, DEL and
/// Unicode format characters (bidi controls, zero-width characters) written
/// as escapes (`\x1b`, `\u{202e}`), so no escape sequence reaches the
/// terminal and nothing reorders or hides what surrounds it. `--json` output
/// never passes here: it stays exact.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

/// `text` shown line by line: its own line breaks kept, every other control escaped.
pub fn shown_lines(text: &str) -> String {
    text.split('\n').map(shown).collect::<Vec<_>>().join("\n")
}

/// Whether a character must not reach a terminal as it is.
fn needs_escape(c: char) -> bool {
    c.is_control() || text::is_format(c) || text::is_ignorable(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_escape_sequences_are_written_as_escapes() {
        assert_eq!(shown("/a\u{1b}[2Jb\n"), "/a\\x1b[2Jb\\x0a");
        assert_eq!(shown("x\u{7f}\u{0}\r\t"), "x\\x7f\\x00\\x0d\\x09");
        // C1: U+009B is a one-character CSI on some terminals.
        assert_eq!(shown("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(shown("\u{85}"), "\\u{85}");
    }

    #[test]
    fn bidi_and_zero_width_characters_are_written_as_escapes() {
        assert_eq!(shown("admin\u{202e}IC-"), "admin\\u{202e}IC-");
        assert_eq!(
            shown("a\u{200b}b\u{2066}c\u{feff}"),
            "a\\u{200b}b\\u{2066}c\\u{feff}"
        );
        assert_eq!(shown("x\u{2028}y"), "x\\u{2028}y");
    }

    #[test]
    fn plain_text_and_other_scripts_pass_untouched() {
        for text in ["/ünï?x=1", "laptop - CLI", "東京", "emoji 🚀", "a\\b", ""] {
            assert!(
                matches!(shown(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn lines_keep_their_breaks() {
        assert_eq!(shown_lines("one\u{1b}\ntwo\r"), "one\\x1b\ntwo\\x0d");
    }
}
