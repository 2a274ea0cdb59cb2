//! Text that came from a server, made safe to print: every control character (C0, DEL, C1,
//! which includes ESC and so every terminal escape sequence), bidirectional-text override and
//! line separator is written as a visible escape such as `\u{1b}`, and long text is cut to
//! [`MAX_SERVER_TEXT_CHARS`].
//!
//! [`crate::output::Reporter`] applies [`sanitize`] to every string of every event, so no
//! server-supplied text reaches the terminal (or a `--json` consumer) raw.

use std::fmt::Write as _;

use crate::limits::MAX_SERVER_TEXT_CHARS;

/// Returns `text` with every character a terminal could act on escaped, cut to
/// [`MAX_SERVER_TEXT_CHARS`] characters (the cut says how many bytes it left out).
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_SERVER_TEXT_CHARS));
    for (count, (at, c)) in text.char_indices().enumerate() {
        if count == MAX_SERVER_TEXT_CHARS {
            let _ = write!(out, "… ({} more bytes)", text.len() - at);
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            _ if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            _ => out.push(c),
        }
    }
    out
}

/// Returns true for characters that must not reach a terminal raw: control characters (C0,
/// DEL, C1), the bidirectional-text controls that reorder what is shown, and the Unicode line
/// and paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

/// Shortens untrusted text to one quoted line of at most 80 characters, for quoting a frame or
/// a body in a report (the report is sanitised again when printed).
pub fn preview(text: &str) -> String {
    const MAX: usize = 80;
    let one_line: String = text.chars().map(|c| if is_unsafe(c) { ' ' } else { c }).collect();
    match one_line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &one_line[..cut]),
        None => format!("{one_line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        let evil = "a\u{1b}[2J\u{1b}]0;title\u{7}b\u{9b}31m\u{7f}\u{202e}rtl\u{2066}\r\n\tz";
        let safe = sanitize(evil);
        assert_eq!(
            safe,
            "a\\u{1b}[2J\\u{1b}]0;title\\u{7}b\\u{9b}31m\\u{7f}\\u{202e}rtl\\u{2066}\\r\\n\\tz"
        );
        assert!(!safe.chars().any(is_unsafe));
        assert_eq!(sanitize("plain text, ünïcödé ✓"), "plain text, ünïcödé ✓");
    }

    #[test]
    fn cuts_long_text() {
        let long = "x".repeat(MAX_SERVER_TEXT_CHARS + 10);
        let cut = sanitize(&long);
        assert!(cut.starts_with(&"x".repeat(MAX_SERVER_TEXT_CHARS)));
        assert!(cut.ends_with("… (10 more bytes)"), "{cut}");
    }

    #[test]
    fn preview_is_one_safe_line() {
        let p = preview("line\none\u{1b}[31m");
        assert!(!p.chars().any(is_unsafe), "{p}");
        assert!(preview(&"y".repeat(200)).ends_with('…'));
    }
}
