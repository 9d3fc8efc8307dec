//! Escape sequences in ER7 text values.
//!
//! Source: HL7 v2.5.1 chapter 2, section 2.7 "Use of escape sequences in text fields", and
//! v2.7 chapter 2 for `\P\` (truncation character). Values are stored escaped and only
//! unescaped when a leaf value is read ([`crate::Message::value`]).
//!
//! | sequence | becomes |
//! |---|---|
//! | `\F\` `\S\` `\T\` `\R\` `\E\` | field, component, subcomponent, repetition separator, escape character |
//! | `\P\` | truncation character (only when MSH-2 defines one) |
//! | `\Xhhhh..\` | the hex bytes, decoded in the message's character set (MSH-18) |
//! | `\.br\` | a newline (`\n`) |
//! | `\H\` `\N\` | nothing (start and end of highlighting) |
//! | anything else (`\Zxx\`, `\Cxxyy\`, `\.sp\`, unterminated `\X41`) | kept literally |

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use std::borrow::Cow;

/// Replaces escape sequences in `raw` (see the module table). Returns `raw` unchanged, without
/// copying, when it holds no escape character.
pub fn unescape<'a>(raw: &'a str, delimiters: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let esc = delimiters.escape();
    if !raw.contains(esc) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            // Unterminated: keep the rest as it is.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let sequence = &after[..end];
        if !expand(sequence, delimiters, charset, &mut out) {
            out.push(esc);
            out.push_str(sequence);
            out.push(esc);
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends the expansion of one escape sequence (text between the escape characters);
/// `false` when the sequence is not one this crate knows.
fn expand(sequence: &str, d: &Delimiters, charset: Charset, out: &mut String) -> bool {
    let c = match sequence {
        "F" => d.field(),
        "S" => d.component(),
        "T" => d.subcomponent(),
        "R" => d.repetition(),
        "E" => d.escape(),
        "P" => match d.truncation() {
            Some(t) => t,
            None => return false,
        },
        ".br" => '\n',
        "H" | "N" => return true,
        _ => {
            return match sequence.strip_prefix('X').and_then(decode_hex) {
                Some(bytes) => {
                    out.push_str(&charset.decode_lossy(&bytes));
                    true
                }
                None => false,
            };
        }
    };
    out.push(c);
    true
}

/// Decodes an even number (at least 2) of hex digits.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// Escapes `text` so it can be written as one leaf value (a subcomponent) with `delimiters`:
/// the six delimiters become `\F\ \S\ \T\ \R\ \E\ \P\`, and control characters (CR, LF, ...)
/// become `\Xhh\`, so a value can never end a segment.
pub fn escape(text: &str, delimiters: &Delimiters) -> String {
    let d = delimiters;
    let esc = d.escape();
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = if c == d.field() {
            Some('F')
        } else if c == d.component() {
            Some('S')
        } else if c == d.subcomponent() {
            Some('T')
        } else if c == d.repetition() {
            Some('R')
        } else if c == esc {
            Some('E')
        } else if Some(c) == d.truncation() {
            Some('P')
        } else {
            None
        };
        if let Some(code) = code {
            out.push(esc);
            out.push(code);
            out.push(esc);
        } else if c.is_ascii_control() {
            out.push(esc);
            out.push_str(&format!("X{:02X}", c as u32));
            out.push(esc);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delimiters {
        Delimiters::from_msh(b'|', b"^~\\&#").unwrap()
    }

    fn un(raw: &str) -> String {
        unescape(raw, &d(), Charset::Utf8).into_owned()
    }

    #[test]
    fn delimiter_escapes_become_delimiters() {
        assert_eq!(un(r"a\F\b\S\c\T\d\R\e\E\f\P\"), "a|b^c&d~e\\f#");
    }

    #[test]
    fn hex_escape_decodes_to_bytes() {
        assert_eq!(un(r"\X41\"), "A");
        assert_eq!(un(r"caf\XC3A9\"), "café");
        assert_eq!(un(r"\X0D0A\"), "\r\n");
        let latin1 = unescape(r"Jos\XE9\", &d(), Charset::Iso8859(1));
        assert_eq!(latin1, "José");
    }

    #[test]
    fn line_break_and_highlight_escapes() {
        assert_eq!(un(r"one\.br\two"), "one\ntwo");
        assert_eq!(un(r"\H\bold\N\"), "bold");
    }

    #[test]
    fn unknown_and_broken_escapes_are_kept_literally() {
        assert_eq!(un(r"\Zlocal\"), r"\Zlocal\");
        assert_eq!(un(r"\X4\ \XZZ\ \X\"), r"\X4\ \XZZ\ \X\");
        assert_eq!(un(r"C:\temp"), r"C:\temp");
        assert_eq!(un(r"\.sp\"), r"\.sp\");
        assert!(matches!(
            unescape("plain", &d(), Charset::Utf8),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn truncation_escape_without_truncation_character_is_literal() {
        let four = Delimiters::default();
        assert_eq!(unescape(r"a\P\", &four, Charset::Utf8), r"a\P\");
    }

    #[test]
    fn escape_then_unescape_round_trips() {
        let text = "a|b^c&d~e\\f#g\r\nh é";
        let escaped = escape(text, &d());
        assert_eq!(escaped, r"a\F\b\S\c\T\d\R\e\E\f\P\g\X0D\\X0A\h é");
        assert_eq!(un(&escaped), text);
    }
}
