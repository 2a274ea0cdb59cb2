//! [`MinerId`]: the rules for a miner's id, and for the parties of a transaction, in one place.
//!
//! An id is what a miner sends with each proof and what a block's reward names. It ends up in the
//! block string every miner hashes, on the dashboard and in every miner's terminal, so it is kept
//! to printable text: trimmed of surrounding whitespace, 1 to [`MAX_ID_CHARS`] characters, with
//! no control characters (C0, DEL, C1) and none of the invisible characters that reorder or hide
//! text (bidirectional overrides and isolates, zero-width marks, line and paragraph separators,
//! the byte-order mark). Any other Unicode is fine: `"José 🚀"` is an id.

use std::fmt;

/// The longest id, in characters (Unicode code points, as JSON Schema's `maxLength` counts them)
/// after trimming: at most 512 bytes of UTF-8.
pub const MAX_ID_CHARS: usize = 128;

/// A valid id: trimmed, non-empty, at most [`MAX_ID_CHARS`] characters, printable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinerId(String);

/// Why a string is not a valid id. The `Display` text says what is wrong without naming the field;
/// callers add it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Empty or only whitespace.
    #[error("must not be empty or only whitespace")]
    Empty,
    /// Longer than [`MAX_ID_CHARS`] after trimming; carries the length in characters.
    #[error("is {0} characters long; at most {MAX_ID_CHARS} are allowed")]
    TooLong(usize),
    /// Holds a control or invisible formatting character; carries its code point.
    #[error("must be printable text, but holds the character U+{0:04X}")]
    Unprintable(u32),
}

impl MinerId {
    /// Checks `raw` against the id rules and returns it trimmed.
    ///
    /// # Errors
    /// When it is empty after trimming, too long, or holds an unprintable character.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        let chars = id.chars().count();
        if chars > MAX_ID_CHARS {
            return Err(IdError::TooLong(chars));
        }
        if let Some(c) = id.chars().find(|c| !is_printable(*c)) {
            return Err(IdError::Unprintable(u32::from(c)));
        }
        Ok(MinerId(id.to_owned()))
    }

    /// Returns the id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the id as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MinerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MinerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Returns false for the characters an id may not hold: control characters and the invisible ones
/// that can disguise text on a terminal or a web page.
pub fn is_printable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{00AD}'                  // soft hyphen
            | '\u{061C}'                // Arabic letter mark
            | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}'   // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}'   // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}'                // byte-order mark
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_keeps_unicode() {
        assert_eq!(MinerId::parse("  José 🚀\n").map(MinerId::into_string), Ok("José 🚀".into()));
        assert_eq!(MinerId::parse("a b").map(MinerId::into_string), Ok("a b".into()));
    }

    #[test]
    fn refuses_empty_long_and_unprintable() {
        assert_eq!(MinerId::parse(" \t\n"), Err(IdError::Empty));
        assert_eq!(MinerId::parse(&"é".repeat(129)), Err(IdError::TooLong(129)));
        assert!(MinerId::parse(&format!("  {}\n", "🚀".repeat(128))).is_ok());
        for bad in [
            "a\u{1b}[2J",
            "a\u{7}",
            "a\u{7f}b",
            "a\u{9b}b",
            "a\u{202e}b",
            "a\u{2066}b",
            "\u{feff}a",
            "a\nb",
        ] {
            assert!(matches!(MinerId::parse(bad), Err(IdError::Unprintable(_))), "{bad:?}");
        }
        assert_eq!(
            MinerId::parse("a\u{1b}b").map_err(|e| e.to_string()),
            Err("must be printable text, but holds the character U+001B".into())
        );
    }
}
