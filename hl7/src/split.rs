//! Splitting a file or a batch into single messages, before parsing each one.
//!
//! Source: HL7 v2.5.1 chapter 2, section 2.10.3 "HL7 batch file structure":
//! `[FHS] { [BHS] { MSH ... } [BTS] } [FTS]`. The batch envelope segments are dropped.

/// Splits `input` into the bytes of each message, in order.
///
/// A message starts at a line beginning with `MSH` and ends at the last segment-like line
/// (3-character ID `[A-Z][A-Z0-9]{2}`) before the next `MSH`, batch segment (`FHS`, `BHS`,
/// `BTS`, `FTS`) or the end of input. Lines are separated by CR, LF or CRLF. So:
/// - a UTF-8 BOM, text before the first `MSH` and the batch envelope are left out;
/// - trailing lines that are not segments (blank lines, `// comments`) are cut off, while
///   such lines between two segments stay in, for [`crate::parse`] to report;
/// - `MSH` inside a field (`OBX||||MSH`) does not start a message.
///
/// The slices borrow from `input` and exclude the last segment's terminator.
pub fn split_messages(input: &[u8]) -> Vec<&[u8]> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut out = Vec::new();
    // (start, end of the last segment-like line) of the message being collected.
    let mut current: Option<(usize, usize)> = None;
    let mut flush = |current: &mut Option<(usize, usize)>| {
        if let Some((start, end)) = current.take() {
            out.push(&input[start..end]);
        }
    };
    let mut start = 0;
    while start < input.len() {
        let end = input[start..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(input.len(), |i| start + i);
        let line = &input[start..end];
        match segment_id(line) {
            Some(b"MSH") => {
                flush(&mut current);
                current = Some((start, end));
            }
            Some(b"FHS" | b"BHS" | b"BTS" | b"FTS") => flush(&mut current),
            Some(_) => {
                if let Some((_, last)) = current.as_mut() {
                    *last = end;
                }
            }
            None => {}
        }
        start = end + 1;
    }
    flush(&mut current);
    out
}

/// The segment ID when `line` starts like a segment: `[A-Z][A-Z0-9]{2}` then the end of the
/// line or a byte that is not a letter or digit (the field separator).
fn segment_id(line: &[u8]) -> Option<&[u8]> {
    let id = line.get(..3)?;
    let ok = id[0].is_ascii_uppercase()
        && id[1..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && line.get(3).is_none_or(|b| !b.is_ascii_alphanumeric());
    ok.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_envelope_is_unwrapped_and_embedded_msh_ignored() {
        let input = b"FHS|^~\\&|F\nBHS|^~\\&|B\nMSH|^~\\&|1\nOBX||||MSH|\nMSH|^~\\&|2\r\nPID|1\r\nBTS|1\nFTS|1\n";
        let parts = split_messages(input);
        assert_eq!(
            parts,
            vec![
                &b"MSH|^~\\&|1\nOBX||||MSH|"[..],
                &b"MSH|^~\\&|2\r\nPID|1"[..]
            ]
        );
    }

    #[test]
    fn comments_and_blank_lines_after_a_message_are_cut_off() {
        let input = b"\xEF\xBB\xBF/* intro */\nMSH|^~\\&|1\nPID|1\n\n// next\nMSH|^~\\&|2\n\n";
        let parts = split_messages(input);
        assert_eq!(parts, vec![&b"MSH|^~\\&|1\nPID|1"[..], &b"MSH|^~\\&|2"[..]]);
        assert!(split_messages(b"no message here\r").is_empty());
        assert!(split_messages(b"").is_empty());
    }
}
