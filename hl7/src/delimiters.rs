//! Message delimiters: the field separator (MSH-1) and the encoding characters (MSH-2).
//!
//! Source: HL7 v2.5.1 chapter 2, section 2.5.4 "Message delimiters", and v2.7 chapter 2,
//! which adds the fifth encoding character, the truncation character (`#` by convention).
//! Nothing here assumes the usual `|^~\&`: every message brings its own.

use crate::error::ParseError;

/// The six delimiters of an ER7 message, read from MSH-1 and MSH-2.
///
/// Invariants (checked by [`Delimiters::from_msh`]): every character is printable ASCII
/// (`!`..=`~`), not a letter or digit, and all of them are different from one another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delimiters {
    field: char,
    component: char,
    repetition: char,
    escape: char,
    subcomponent: char,
    truncation: Option<char>,
}

impl Default for Delimiters {
    /// The recommended delimiters `|^~\&` (no truncation character).
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

/// Whether `b` may serve as a delimiter: printable ASCII, not alphanumeric, not a space.
fn is_delimiter_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

impl Delimiters {
    /// Reads the delimiters from the MSH-1 byte and the MSH-2 bytes.
    ///
    /// MSH-2 holds 4 characters (component, repetition, escape, subcomponent) or, from v2.7,
    /// 5 (plus truncation). Errors: [`ParseError::InvalidFieldSeparator`] when MSH-1 is not a
    /// printable non-alphanumeric ASCII character, [`ParseError::InvalidEncodingCharacters`]
    /// when MSH-2 has another length, holds a letter, digit, space, control or non-ASCII byte,
    /// or repeats a character (also the field separator).
    pub fn from_msh(field: u8, encoding: &[u8]) -> Result<Delimiters, ParseError> {
        if !is_delimiter_byte(field) {
            return Err(ParseError::InvalidFieldSeparator { found: field });
        }
        let bad = |reason: &'static str| ParseError::InvalidEncodingCharacters {
            found: String::from_utf8_lossy(encoding).into_owned(),
            reason,
        };
        if !(4..=5).contains(&encoding.len()) {
            return Err(bad("expected 4 or 5 characters"));
        }
        if !encoding.iter().all(|&b| is_delimiter_byte(b)) {
            return Err(bad(
                "each must be printable ASCII, not a letter, digit or space",
            ));
        }
        for (i, &b) in encoding.iter().enumerate() {
            if b == field || encoding[..i].contains(&b) {
                return Err(bad("a character is used twice"));
            }
        }
        Ok(Delimiters {
            field: char::from(field),
            component: char::from(encoding[0]),
            repetition: char::from(encoding[1]),
            escape: char::from(encoding[2]),
            subcomponent: char::from(encoding[3]),
            truncation: encoding.get(4).map(|&b| char::from(b)),
        })
    }

    /// MSH-1, the field separator (usually `|`).
    pub fn field(&self) -> char {
        self.field
    }

    /// First MSH-2 character, the component separator (usually `^`).
    pub fn component(&self) -> char {
        self.component
    }

    /// Second MSH-2 character, the repetition separator (usually `~`).
    pub fn repetition(&self) -> char {
        self.repetition
    }

    /// Third MSH-2 character, the escape character (usually `\`).
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Fourth MSH-2 character, the subcomponent separator (usually `&`).
    pub fn subcomponent(&self) -> char {
        self.subcomponent
    }

    /// Fifth MSH-2 character (v2.7+), the truncation character (usually `#`), if present.
    pub fn truncation(&self) -> Option<char> {
        self.truncation
    }

    /// The MSH-2 text, e.g. `^~\&` or `^~\&#`.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        s.push(self.escape);
        s.push(self.subcomponent);
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_and_five_encoding_characters_are_read_in_order() {
        let d = Delimiters::from_msh(b'|', b"^~\\&").unwrap();
        assert_eq!(d, Delimiters::default());
        let d = Delimiters::from_msh(b'|', b"^~\\&#").unwrap();
        assert_eq!(d.truncation(), Some('#'));
        assert_eq!(d.encoding_characters(), "^~\\&#");
        let d = Delimiters::from_msh(b'^', b"~|\\&").unwrap();
        assert_eq!((d.field(), d.component(), d.repetition()), ('^', '~', '|'));
    }

    #[test]
    fn invalid_encoding_characters_are_rejected() {
        for enc in [
            &b"^"[..],
            b"^~}",
            b"0000",
            b"^~ &",
            b"^~\\\\&",
            b"^~\\|",
            b"^\xfd00",
            b"^~\\&#!",
        ] {
            assert!(
                matches!(
                    Delimiters::from_msh(b'|', enc),
                    Err(ParseError::InvalidEncodingCharacters { .. })
                ),
                "{enc:?}"
            );
        }
        assert!(matches!(
            Delimiters::from_msh(b'H', b"^~\\&"),
            Err(ParseError::InvalidFieldSeparator { found: b'H' })
        ));
    }
}
