//! Characters that display as something other than they are: refused in names, escaped on terminals.

/// The first character of `name` that displays as nothing: a format character
/// (`is_format`), another default-ignorable one (fillers, the
/// combining grapheme joiner, Mongolian selectors, tags and plane 14), or a
/// variation selector that does not follow a non-ASCII character (emoji need
/// U+FE0F; after `a` it only makes "ci" and "ci\u{FE0F}" two names that look
/// alike).
pub fn invisible_in(name: &str) -> Option<char> {
    let mut previous: Option<char> = None;
    for c in name.chars() {
        let ignorable = is_ignorable(c);
        let stray_selector =
            (0xFE00..=0xFE0F).contains(&(c as u32)) && previous.is_none_or(|p| p.is_ascii());
        if is_format(c) || ignorable || stray_selector {
            return Some(c);
        }
        previous = Some(c);
    }
    None
}

/// Unicode format characters (general category Cf: bidi controls, zero-width
/// characters, invisible operators, tags) and the line and paragraph
/// separators: they make a name display as something else ("admin-CI"
/// reversed by U+202E).
pub fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Default-ignorable characters that are not format characters but display
/// as nothing all the same: Hangul fillers, the combining grapheme joiner,
/// Mongolian free variation selectors, reserved ones and plane 14.
pub fn is_ignorable(c: char) -> bool {
    matches!(
        c as u32,
        0x034F
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x3164
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0xE0000..=0xE0FFF
    )
}
