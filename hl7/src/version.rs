//! HL7 v2 versions accepted by this crate (MSH-12, "Version ID", table 0104).
//!
//! 2.3 up to 2.8.2 are accepted; 2.1, 2.2 and anything unknown are not, and
//! [`crate::parse`] answers [`crate::ParseError::UnsupportedVersion`] for them, which a caller
//! turns into an AR acknowledgment with ERR-3 = 203 "Unsupported version id".

use std::fmt;
use std::str::FromStr;

/// A supported HL7 v2 version, ordered from oldest to newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Version {
    /// 2.3
    V2_3,
    /// 2.3.1
    V2_3_1,
    /// 2.4
    V2_4,
    /// 2.5
    V2_5,
    /// 2.5.1
    V2_5_1,
    /// 2.6
    V2_6,
    /// 2.7
    V2_7,
    /// 2.7.1
    V2_7_1,
    /// 2.8
    V2_8,
    /// 2.8.1
    V2_8_1,
    /// 2.8.2
    V2_8_2,
}

const ALL: [(Version, &str); 11] = [
    (Version::V2_3, "2.3"),
    (Version::V2_3_1, "2.3.1"),
    (Version::V2_4, "2.4"),
    (Version::V2_5, "2.5"),
    (Version::V2_5_1, "2.5.1"),
    (Version::V2_6, "2.6"),
    (Version::V2_7, "2.7"),
    (Version::V2_7_1, "2.7.1"),
    (Version::V2_8, "2.8"),
    (Version::V2_8_1, "2.8.1"),
    (Version::V2_8_2, "2.8.2"),
];

impl Version {
    /// Parses the version ID as written in MSH-12.1 (e.g. `2.5.1`); surrounding spaces are
    /// ignored. `None` for versions this crate does not accept.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        ALL.iter().find(|(_, s)| *s == text).map(|(v, _)| *v)
    }

    /// The version ID text, e.g. `"2.5.1"`.
    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(v, _)| *v == self)
            .map(|(_, s)| *s)
            .unwrap_or("2.5.1")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of `"2.2".parse::<Version>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported HL7 version {0:?}")]
pub struct UnknownVersion(pub String);

impl FromStr for Version {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s).ok_or_else(|| UnknownVersion(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_2_3_to_2_8_round_trip_and_others_are_rejected() {
        for (v, s) in ALL {
            assert_eq!(Version::parse(s), Some(v));
            assert_eq!(v.to_string(), s);
        }
        for s in ["2.1", "2.2", "2.9", "3.0", "", "2.8.10000", "2.5.1.1"] {
            assert_eq!(Version::parse(s), None, "{s}");
        }
        assert!(Version::V2_4 < Version::V2_5);
    }
}
