//! FHIR partial dates and times: `date`, `dateTime`, `instant` (FHIR R4 datatypes.html
//! §2.24.0.1) and the search forms of search.html §3.1.1.4.6/§3.2.6 (dates to any precision).
//!
//! chrono cannot hold `2020` or `2020-01` with their precision, so [`FhirDateTime`] keeps
//! the parts that were written and [`FhirDateTime::to_range`] gives the implicit range: a
//! value stands for the whole interval its precision covers (`2020` is all of 2020).
//!
//! ```
//! use fhir_model::datetime::{FhirDateTime, Precision};
//! let d = FhirDateTime::parse("2020-01").unwrap();
//! assert_eq!(d.precision(), Precision::Month);
//! let (low, high) = d.to_range();
//! assert_eq!(high - low, 31 * 86_400 * 1_000_000);
//! ```

use std::fmt;

/// How much of a date/time was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `2020`
    Year,
    /// `2020-01`
    Month,
    /// `2020-01-02`
    Day,
    /// `2020-01-02T10:00` (allowed in search parameters only, not in resource values)
    Minute,
    /// `2020-01-02T10:00:00`
    Second,
    /// Fractional seconds with this many digits (1..=9 are distinguished; more count as 9):
    /// `2020-01-02T10:00:00.123` is `Fraction(3)`.
    Fraction(u8),
}

/// Why a string is not a valid FHIR date/time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    /// The text does not have the lexical form (datatypes.html regexes).
    #[error("not a valid {expected}: expected {form}")]
    Syntax {
        /// `date`, `dateTime`, `instant` or `date/time`.
        expected: &'static str,
        /// The expected form, e.g. `YYYY, YYYY-MM or YYYY-MM-DD`.
        form: &'static str,
    },
    /// A field is out of range (month 13, 31 April, hour 24, year 0000, offset +15:00).
    #[error("{0} is out of range")]
    Range(&'static str),
    /// dateTime/instant with a time of day but no time zone (datatypes.html: "If hours and
    /// minutes are specified, a time zone SHALL be populated").
    #[error("a time zone is required when a time is given")]
    MissingZone,
}

/// A FHIR date, dateTime or instant, possibly partial, as written.
///
/// Shapes: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDThh:mm[:ss[.f+]][Z|(+|-)hh:mm]`.
/// Equality is on the written parts, not the instant they denote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FhirDateTime {
    year: u16,
    month: Option<u8>,
    day: Option<u8>,
    hour: Option<u8>,
    minute: Option<u8>,
    second: Option<u8>,
    /// Fraction of a second in nanoseconds, and the number of digits written.
    nanos: u32,
    fraction_digits: u8,
    /// Offset from UTC in minutes (`Z` is 0); `None` when no zone was written.
    offset_minutes: Option<i16>,
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl FhirDateTime {
    /// Parses the lenient search form (search.html §3.1.1.4.6): any precision from a year to
    /// fractional seconds, minutes allowed without seconds, time zone optional (values
    /// without one are taken as UTC by [`FhirDateTime::to_range`]).
    ///
    /// # Errors
    /// [`DateTimeError`] when the text is not of that form or a field is out of range.
    pub fn parse(text: &str) -> Result<Self, DateTimeError> {
        let v = Self::parse_lexical(text).ok_or(DateTimeError::Syntax {
            expected: "date/time",
            form: "YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|+hh:mm]]]]",
        })?;
        v.check_ranges()?;
        Ok(v)
    }

    /// Parses a FHIR `date` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`; no time, no zone).
    ///
    /// # Errors
    /// [`DateTimeError`] when the text is not a valid FHIR date (e.g. `2021-02-29`).
    pub fn parse_date(text: &str) -> Result<Self, DateTimeError> {
        let err = DateTimeError::Syntax {
            expected: "date",
            form: "YYYY, YYYY-MM or YYYY-MM-DD",
        };
        let v = Self::parse_lexical(text).ok_or(err.clone())?;
        if v.hour.is_some() || v.offset_minutes.is_some() {
            return Err(err);
        }
        v.check_ranges()?;
        Ok(v)
    }

    /// Parses a FHIR `dateTime`: a partial date, or a full date with `Thh:mm:ss[.f+]` and a
    /// required zone.
    ///
    /// # Errors
    /// [`DateTimeError`] when the text is not a valid FHIR dateTime.
    pub fn parse_date_time(text: &str) -> Result<Self, DateTimeError> {
        let err = DateTimeError::Syntax {
            expected: "dateTime",
            form: "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)",
        };
        let v = Self::parse_lexical(text).ok_or(err.clone())?;
        if v.hour.is_some() && v.second.is_none() {
            return Err(err);
        }
        if v.hour.is_some() && v.offset_minutes.is_none() {
            return Err(DateTimeError::MissingZone);
        }
        v.check_ranges()?;
        Ok(v)
    }

    /// Parses a FHIR `instant`: `YYYY-MM-DDThh:mm:ss[.f+](Z|+hh:mm)`.
    ///
    /// # Errors
    /// [`DateTimeError`] when the text is not a valid FHIR instant.
    pub fn parse_instant(text: &str) -> Result<Self, DateTimeError> {
        let err = DateTimeError::Syntax {
            expected: "instant",
            form: "YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)",
        };
        let v = Self::parse_lexical(text).ok_or(err.clone())?;
        if v.second.is_none() {
            return Err(err);
        }
        if v.offset_minutes.is_none() {
            return Err(DateTimeError::MissingZone);
        }
        v.check_ranges()?;
        Ok(v)
    }

    /// The precision written.
    pub fn precision(&self) -> Precision {
        if self.fraction_digits > 0 {
            Precision::Fraction(self.fraction_digits.min(9))
        } else if self.second.is_some() {
            Precision::Second
        } else if self.minute.is_some() {
            Precision::Minute
        } else if self.day.is_some() {
            Precision::Day
        } else if self.month.is_some() {
            Precision::Month
        } else {
            Precision::Year
        }
    }

    /// The year (1..=9999).
    pub fn year(&self) -> u16 {
        self.year
    }

    /// The month (1..=12), if written.
    pub fn month(&self) -> Option<u8> {
        self.month
    }

    /// The day of the month, if written.
    pub fn day(&self) -> Option<u8> {
        self.day
    }

    /// The zone offset in minutes east of UTC (`Z` = 0), if written.
    pub fn offset_minutes(&self) -> Option<i16> {
        self.offset_minutes
    }

    /// The implicit range in UTC, as microseconds since 1970-01-01T00:00:00Z:
    /// `(inclusive low, exclusive high)` (search.html §3.2.6 "the precision of the value
    /// defines the range"). Values without a zone are taken as UTC. A fraction finer than
    /// microseconds is truncated and covers one microsecond. Leap second `:60` counts as the
    /// following second.
    ///
    /// `2020` gives `[2020-01-01T00:00Z, 2021-01-01T00:00Z)`;
    /// `2020-01-02T10:00:00+01:00` gives `[2020-01-02T09:00:00Z, 09:00:01Z)`.
    pub fn to_range(&self) -> (i64, i64) {
        let year = i64::from(self.year);
        let month = self.month.unwrap_or(1);
        let day = self.day.unwrap_or(1);
        let day_start = days_from_civil(year, month, day) * MICROS_PER_DAY;
        let offset = i64::from(self.offset_minutes.unwrap_or(0)) * 60 * MICROS_PER_SECOND;
        let time = i64::from(self.hour.unwrap_or(0)) * 3600 * MICROS_PER_SECOND
            + i64::from(self.minute.unwrap_or(0)) * 60 * MICROS_PER_SECOND
            + i64::from(self.second.unwrap_or(0)) * MICROS_PER_SECOND
            + i64::from(self.nanos / 1000);
        let low = day_start + time - offset;
        let width = match self.precision() {
            Precision::Year => {
                (days_from_civil(year + 1, 1, 1) - days_from_civil(year, 1, 1)) * MICROS_PER_DAY
            }
            Precision::Month => i64::from(days_in_month(year, month)) * MICROS_PER_DAY,
            Precision::Day => MICROS_PER_DAY,
            Precision::Minute => 60 * MICROS_PER_SECOND,
            Precision::Second => MICROS_PER_SECOND,
            Precision::Fraction(d) if d >= 6 => 1,
            Precision::Fraction(d) => 10i64.pow(6 - u32::from(d)),
        };
        (low, low + width)
    }

    /// Strict lexical scan; field ranges are checked separately.
    fn parse_lexical(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let mut p = Cursor { b, i: 0 };
        let year = p.digits(4)? as u16;
        let mut v = FhirDateTime {
            year,
            month: None,
            day: None,
            hour: None,
            minute: None,
            second: None,
            nanos: 0,
            fraction_digits: 0,
            offset_minutes: None,
        };
        if p.eat(b'-') {
            v.month = Some(p.digits(2)? as u8);
            if p.eat(b'-') {
                v.day = Some(p.digits(2)? as u8);
                if p.eat(b'T') {
                    v.hour = Some(p.digits(2)? as u8);
                    if !p.eat(b':') {
                        return None;
                    }
                    v.minute = Some(p.digits(2)? as u8);
                    if p.eat(b':') {
                        v.second = Some(p.digits(2)? as u8);
                        if p.eat(b'.') {
                            let start = p.i;
                            let mut nanos: u32 = 0;
                            while let Some(d) = p.peek_digit() {
                                let n = p.i - start;
                                if n < 9 {
                                    nanos = nanos * 10 + u32::from(d);
                                }
                                p.i += 1;
                            }
                            let n = p.i - start;
                            if n == 0 {
                                return None;
                            }
                            for _ in n..9 {
                                nanos *= 10;
                            }
                            v.nanos = nanos;
                            v.fraction_digits = n.min(255) as u8;
                        }
                    }
                    if p.eat(b'Z') {
                        v.offset_minutes = Some(0);
                    } else if let Some(sign) = p.eat_sign() {
                        let h = p.digits(2)? as i16;
                        if !p.eat(b':') {
                            return None;
                        }
                        let m = p.digits(2)? as i16;
                        if m > 59 || h > 14 || (h == 14 && m > 0) {
                            return None;
                        }
                        v.offset_minutes = Some(sign * (h * 60 + m));
                    }
                }
            }
        }
        (p.i == b.len()).then_some(v)
    }

    fn check_ranges(&self) -> Result<(), DateTimeError> {
        if self.year == 0 {
            return Err(DateTimeError::Range("year 0000"));
        }
        if let Some(m) = self.month
            && !(1..=12).contains(&m)
        {
            return Err(DateTimeError::Range("month"));
        }
        if let (Some(m), Some(d)) = (self.month, self.day)
            && (d == 0 || d > days_in_month(i64::from(self.year), m))
        {
            return Err(DateTimeError::Range("day of month"));
        }
        if self.hour.is_some_and(|h| h > 23) {
            return Err(DateTimeError::Range("hour"));
        }
        if self.minute.is_some_and(|m| m > 59) {
            return Err(DateTimeError::Range("minute"));
        }
        if self.second.is_some_and(|s| s > 60) {
            return Err(DateTimeError::Range("second"));
        }
        Ok(())
    }
}

impl fmt::Display for FhirDateTime {
    /// Writes the value back in FHIR form with the parts it was parsed with (fractions
    /// beyond nine digits are cut to nine).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if let Some(m) = self.month {
            write!(f, "-{m:02}")?;
        }
        if let Some(d) = self.day {
            write!(f, "-{d:02}")?;
        }
        if let (Some(h), Some(mi)) = (self.hour, self.minute) {
            write!(f, "T{h:02}:{mi:02}")?;
            if let Some(s) = self.second {
                write!(f, ":{s:02}")?;
            }
            if self.fraction_digits > 0 {
                let digits = usize::from(self.fraction_digits.min(9));
                let frac = format!("{:09}", self.nanos);
                write!(f, ".{}", &frac[..digits])?;
            }
            match self.offset_minutes {
                Some(0) => f.write_str("Z")?,
                Some(o) => {
                    let sign = if o < 0 { '-' } else { '+' };
                    let o = o.unsigned_abs();
                    write!(f, "{sign}{:02}:{:02}", o / 60, o % 60)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for FhirDateTime {
    type Err = DateTimeError;

    /// Same as [`FhirDateTime::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.peek_digit()?;
            v = v * 10 + u32::from(d);
            self.i += 1;
        }
        Some(v)
    }

    fn peek_digit(&self) -> Option<u8> {
        self.b
            .get(self.i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| c - b'0')
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_sign(&mut self) -> Option<i16> {
        if self.eat(b'+') {
            Some(1)
        } else if self.eat(b'-') {
            Some(-1)
        } else {
            None
        }
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let m = i64::from(month);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
