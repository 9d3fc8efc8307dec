//! Positions inside a message, numbered the HL7 way (1-based): `PID-3`, `PID-5.1`,
//! `OBX[2]-5`, `PID-3[2].1.2`.
//!
//! Source: HL7 v2.5.1 chapter 2, section 2.5 (message construction) and the ERL data type
//! (segment ID, segment sequence, field position, field repetition, component number,
//! subcomponent number), which uses the same numbering. Field 1 of MSH is the field
//! separator itself and field 2 the encoding characters, so MSH-9 is the message type,
//! MSH-10 the control ID and MSH-12 the version.

use std::fmt;
use std::str::FromStr;

/// A 1-based position in a message, from a segment down to a subcomponent.
///
/// `component` and `subcomponent` are `None` when the location stops at a higher level:
/// [`crate::Message::value`] then reads the first one, [`crate::Message::raw`] the whole item.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Segment ID, e.g. `"PID"`.
    pub segment: String,
    /// Which occurrence of that segment (1 = first).
    pub occurrence: usize,
    /// Field position (MSH-1 is the field separator).
    pub field: usize,
    /// Field repetition (1 = first).
    pub repetition: usize,
    /// Component number.
    pub component: Option<usize>,
    /// Subcomponent number.
    pub subcomponent: Option<usize>,
}

impl Location {
    /// Field `field` of the first `segment`, first repetition.
    pub fn new(segment: &str, field: usize) -> Location {
        Location {
            segment: segment.to_owned(),
            occurrence: 1,
            field,
            repetition: 1,
            component: None,
            subcomponent: None,
        }
    }

    /// Same location in the `n`th occurrence of the segment.
    pub fn occurrence(mut self, n: usize) -> Location {
        self.occurrence = n;
        self
    }

    /// Same location in repetition `n` of the field.
    pub fn repetition(mut self, n: usize) -> Location {
        self.repetition = n;
        self
    }

    /// Narrows to component `n`.
    pub fn component(mut self, n: usize) -> Location {
        self.component = Some(n);
        self
    }

    /// Narrows to subcomponent `n` (of component 1 unless a component was given).
    pub fn subcomponent(mut self, n: usize) -> Location {
        self.component.get_or_insert(1);
        self.subcomponent = Some(n);
        self
    }
}

/// Why a location string such as `"PID-3.1"` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HL7 location {input:?}: {reason}")]
pub struct LocationError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Location {
    type Err = LocationError;

    /// Reads `SEG[-|.]FIELD[.COMPONENT[.SUBCOMPONENT]]`, with optional `[n]` or `(n)` after the
    /// segment ID (occurrence) and after the field (repetition). Segment IDs are upper-cased.
    /// Every number must be at least 1.
    fn from_str(input: &str) -> Result<Location, LocationError> {
        let err = |reason| LocationError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        let id: String = s.chars().take(3).collect::<String>().to_ascii_uppercase();
        if id.len() != 3 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("expected a 3-character segment ID"));
        }
        let mut rest = &s[3..];
        let (occurrence, r) = take_index(rest).map_err(err)?;
        rest = r;
        rest = rest
            .strip_prefix(['-', '.'])
            .ok_or_else(|| err("expected '-' and a field number after the segment ID"))?;
        let (field, r) = take_number(rest).map_err(err)?;
        rest = r;
        let (repetition, r) = take_index(rest).map_err(err)?;
        rest = r;
        let mut parts = [None, None];
        for part in &mut parts {
            if let Some(r) = rest.strip_prefix('.') {
                let (n, r) = take_number(r).map_err(err)?;
                *part = Some(n);
                rest = r;
            }
        }
        if !rest.is_empty() {
            return Err(err("unexpected text after the location"));
        }
        Ok(Location {
            segment: id,
            occurrence: occurrence.unwrap_or(1),
            field,
            repetition: repetition.unwrap_or(1),
            component: parts[0],
            subcomponent: parts[1],
        })
    }
}

/// A number >= 1 at the start of `s`.
fn take_number(s: &str) -> Result<(usize, &str), &'static str> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: usize = s[..digits].parse().map_err(|_| "expected a number")?;
    if n == 0 {
        return Err("positions are 1-based");
    }
    Ok((n, &s[digits..]))
}

/// An optional `[n]` or `(n)` at the start of `s`.
fn take_index(s: &str) -> Result<(Option<usize>, &str), &'static str> {
    let close = match s.as_bytes().first() {
        Some(b'[') => ']',
        Some(b'(') => ')',
        _ => return Ok((None, s)),
    };
    let (n, rest) = take_number(&s[1..])?;
    let rest = rest.strip_prefix(close).ok_or("unclosed index")?;
    Ok((Some(n), rest))
}

impl fmt::Display for Location {
    /// `PID-3`, `OBX[2]-5[3].1.2`: occurrence and repetition only when not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if self.occurrence != 1 {
            write!(f, "[{}]", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if self.repetition != 1 {
            write!(f, "[{}]", self.repetition)?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_strings_parse_to_one_based_positions() {
        let l: Location = "PID-3".parse().unwrap();
        assert_eq!(l, Location::new("PID", 3));
        let l: Location = "obx(2)-5[3].1.2".parse().unwrap();
        assert_eq!(
            l,
            Location::new("OBX", 5)
                .occurrence(2)
                .repetition(3)
                .component(1)
                .subcomponent(2)
        );
        assert_eq!(l.to_string(), "OBX[2]-5[3].1.2");
        assert_eq!(
            "MSH.9.2".parse::<Location>().unwrap().to_string(),
            "MSH-9.2"
        );
    }

    #[test]
    fn malformed_location_strings_are_errors() {
        for s in [
            "",
            "PI-3",
            "PID",
            "PID-0",
            "PID-3.",
            "PID-3.1.2.3",
            "PID[2-3",
            "PID-x",
        ] {
            assert!(s.parse::<Location>().is_err(), "{s}");
        }
    }
}
