//! Scalar values of the FHIRPath System types (<http://hl7.org/fhirpath/N1/> §4.1 "Literals",
//! §6.1 "Equality", §6.2 "Comparison", §6.6 "Math", §6.6.3/6.6.4 date arithmetic).
//!
//! Decimals are exact: [`Dec`] is a 128-bit mantissa with a decimal scale. FHIR decimals
//! keep their written precision (FHIR R4 datatypes.html#decimal, and the workspace enables
//! `serde_json/arbitrary_precision` so the text survives), and the FHIRPath suite compares
//! decimals exactly (`0.1 + 0.2 = 0.3`, `2.2 mod 1.8 = 0.4`), which binary floating point
//! cannot do. A hand-written fixed-point type covers the operations needed without adding a
//! dependency; transcendental functions (`exp`, `ln`, `sqrt`, `power` with a fractional
//! exponent) go through `f64` and are rounded back to 16 digits.

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::cmp::Ordering;
use std::fmt;

/// Maximum decimal scale kept (FHIRPath §2.1.9 requires at least 8 digits after the point).
const MAX_SCALE: u32 = 28;

/// An exact decimal: `mant / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dec {
    pub(crate) mant: i128,
    pub(crate) scale: u32,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Dec {
    pub(crate) fn from_i64(i: i64) -> Dec {
        Dec {
            mant: i128::from(i),
            scale: 0,
        }
    }

    /// Parses decimal text (`-12.50`, `1e3`, `1.5E-2`).
    pub(crate) fn parse(s: &str) -> Option<Dec> {
        let s = s.trim();
        let (s, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (neg, digits) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if digits.contains('.') && frac.is_empty() {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut mant: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mant = mant.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        let mut scale = frac.len() as i64 - i64::from(exp);
        if scale < 0 {
            mant = mant.checked_mul(pow10(u32::try_from(-scale).ok()?)?)?;
            scale = 0;
        }
        let mut d = Dec {
            mant: if neg { -mant } else { mant },
            scale: u32::try_from(scale).ok()?,
        };
        while d.scale > MAX_SCALE {
            d = d.round_to(MAX_SCALE);
        }
        Some(d)
    }

    pub(crate) fn from_f64(f: f64) -> Option<Dec> {
        if !f.is_finite() {
            return None;
        }
        let d = Dec::parse(&format!("{f:.16}"))?;
        Some(d.normalize())
    }

    pub(crate) fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    pub(crate) fn neg(self) -> Dec {
        Dec {
            mant: -self.mant,
            scale: self.scale,
        }
    }

    pub(crate) fn abs(self) -> Dec {
        Dec {
            mant: self.mant.abs(),
            scale: self.scale,
        }
    }

    /// Removes trailing fractional zeros.
    pub(crate) fn normalize(mut self) -> Dec {
        while self.scale > 0 && self.mant % 10 == 0 {
            self.mant /= 10;
            self.scale -= 1;
        }
        self
    }

    fn rescale(self, scale: u32) -> Option<Dec> {
        if scale >= self.scale {
            Some(Dec {
                mant: self.mant.checked_mul(pow10(scale - self.scale)?)?,
                scale,
            })
        } else {
            Some(self.round_to(scale))
        }
    }

    /// Rounds half away from zero to `scale` digits.
    pub(crate) fn round_to(self, scale: u32) -> Dec {
        if scale >= self.scale {
            return self.rescale(scale).unwrap_or(self);
        }
        let Some(p) = pow10(self.scale - scale) else {
            return Dec { mant: 0, scale };
        };
        let q = self.mant / p;
        let r = self.mant % p;
        // |r| >= p/2, written without overflow.
        let q = if r.abs() >= p - r.abs() {
            q + self.mant.signum()
        } else {
            q
        };
        Dec { mant: q, scale }
    }

    /// Truncates toward zero to an integer.
    pub(crate) fn trunc(self) -> i128 {
        match pow10(self.scale) {
            Some(p) => self.mant / p,
            None => 0,
        }
    }

    pub(crate) fn floor(self) -> i128 {
        let t = self.trunc();
        if self.mant < 0 && Dec::from_i128(t) != self.normalize_cmp() {
            t - 1
        } else {
            t
        }
    }

    pub(crate) fn ceil(self) -> i128 {
        let t = self.trunc();
        if self.mant > 0 && Dec::from_i128(t) != self.normalize_cmp() {
            t + 1
        } else {
            t
        }
    }

    fn normalize_cmp(self) -> Dec {
        self.normalize()
    }

    pub(crate) fn from_i128(i: i128) -> Dec {
        Dec { mant: i, scale: 0 }
    }

    fn align(a: Dec, b: Dec) -> Option<(i128, i128, u32)> {
        let s = a.scale.max(b.scale);
        Some((a.rescale(s)?.mant, b.rescale(s)?.mant, s))
    }

    pub(crate) fn add(self, o: Dec) -> Option<Dec> {
        let (a, b, s) = Dec::align(self, o)?;
        Some(Dec {
            mant: a.checked_add(b)?,
            scale: s,
        })
    }

    pub(crate) fn sub(self, o: Dec) -> Option<Dec> {
        self.add(o.neg())
    }

    pub(crate) fn mul(self, o: Dec) -> Option<Dec> {
        let mut d = Dec {
            mant: self.mant.checked_mul(o.mant)?,
            scale: self.scale + o.scale,
        };
        if d.scale > MAX_SCALE {
            d = d.round_to(MAX_SCALE);
        }
        Some(d)
    }

    /// Division with up to 16 fractional digits, trailing zeros removed; `None` on a
    /// zero divisor (FHIRPath §6.6.4: the result is empty).
    pub(crate) fn div(self, o: Dec) -> Option<Dec> {
        if o.mant == 0 {
            return None;
        }
        let target = 16u32;
        // self.mant * 10^(target + o.scale - self.scale) / o.mant, at scale `target`.
        let shift = i64::from(target) + i64::from(o.scale) - i64::from(self.scale);
        let (num, den) = if shift >= 0 {
            (
                self.mant.checked_mul(pow10(u32::try_from(shift).ok()?)?)?,
                o.mant,
            )
        } else {
            (
                self.mant,
                o.mant.checked_mul(pow10(u32::try_from(-shift).ok()?)?)?,
            )
        };
        let q = num / den;
        let r = num % den;
        let q = if r.abs() >= den.abs() - r.abs() {
            q + (num.signum() * den.signum())
        } else {
            q
        };
        Some(
            Dec {
                mant: q,
                scale: target,
            }
            .normalize(),
        )
    }

    pub(crate) fn is_integer(self) -> bool {
        self.normalize().scale == 0
    }

    pub(crate) fn cmp(self, o: Dec) -> Ordering {
        match Dec::align(self, o) {
            Some((a, b, _)) => a.cmp(&b),
            None => self.to_f64().total_cmp(&o.to_f64()),
        }
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.mant < 0;
        let digits = self.mant.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if neg {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() <= scale {
            write!(f, "0.{}{}", "0".repeat(scale - digits.len()), digits)
        } else {
            let (i, fr) = digits.split_at(digits.len() - scale);
            write!(f, "{i}.{fr}")
        }
    }
}

/// A quantity (FHIRPath §4.1.7): value and UCUM unit or calendar duration keyword.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Quantity {
    pub(crate) value: Dec,
    pub(crate) unit: Box<str>,
}

/// Precision levels of dates and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Prec {
    Year = 0,
    Month = 1,
    Day = 2,
    Hour = 3,
    Minute = 4,
    Second = 5,
    Millis = 6,
}

/// A partial date, dateTime or time (FHIRPath §2.1.x "Date", "DateTime", "Time").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartialDt {
    /// Components: year, month, day, hour, minute, second, millisecond.
    pub(crate) c: [i32; 7],
    pub(crate) prec: Prec,
    /// Offset in minutes east of UTC.
    pub(crate) tz: Option<i32>,
    pub(crate) is_time: bool,
    /// Whether it was written as a dateTime (`@2015T`), even with only date precision.
    pub(crate) is_datetime: bool,
    /// Digits of the fractional second as written (for output).
    pub(crate) frac_digits: u8,
}

fn num(s: &str, len: usize) -> Option<i32> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn parse_time_part(t: &str, out: &mut PartialDt, base: usize) -> Option<()> {
    let mut it = t.splitn(3, ':');
    let h = num(it.next()?, 2)?;
    if h > 23 {
        return None;
    }
    out.c[base] = h;
    out.prec = Prec::Hour;
    if let Some(m) = it.next() {
        let m = num(m, 2)?;
        if m > 59 {
            return None;
        }
        out.c[base + 1] = m;
        out.prec = Prec::Minute;
        if let Some(s) = it.next() {
            let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
            let sec = num(sec, 2)?;
            if sec > 59 {
                return None;
            }
            out.c[base + 2] = sec;
            out.prec = Prec::Second;
            if s.contains('.') {
                if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let ms: String = frac.chars().chain("000".chars()).take(3).collect();
                out.c[base + 3] = ms.parse().ok()?;
                out.prec = Prec::Millis;
                out.frac_digits = frac.len().min(9) as u8;
            }
        }
    }
    Some(())
}

impl PartialDt {
    fn blank() -> PartialDt {
        PartialDt {
            c: [0, 1, 1, 0, 0, 0, 0],
            prec: Prec::Year,
            tz: None,
            is_time: false,
            is_datetime: false,
            frac_digits: 0,
        }
    }

    /// Parses a date (`2014`, `2014-01`, `2014-01-05`).
    pub(crate) fn parse_date(s: &str) -> Option<PartialDt> {
        let mut d = PartialDt::blank();
        let mut it = s.split('-');
        d.c[0] = num(it.next()?, 4)?;
        if let Some(m) = it.next() {
            let m = num(m, 2)?;
            if !(1..=12).contains(&m) {
                return None;
            }
            d.c[1] = m;
            d.prec = Prec::Month;
            if let Some(day) = it.next() {
                let day = num(day, 2)?;
                NaiveDate::from_ymd_opt(d.c[0], m as u32, day as u32)?;
                d.c[2] = day;
                d.prec = Prec::Day;
            }
        }
        if it.next().is_some() {
            return None;
        }
        Some(d)
    }

    /// Parses a dateTime (`2014-01-05T10:30:00.000+01:00`, `2014T`, or a bare date).
    pub(crate) fn parse_datetime(s: &str) -> Option<PartialDt> {
        let (date, time) = s.split_once('T').unwrap_or((s, ""));
        let mut d = PartialDt::parse_date(date)?;
        d.is_datetime = true;
        if time.is_empty() {
            return Some(d);
        }
        if d.prec != Prec::Day {
            return None;
        }
        let (time, tz) = split_tz(time)?;
        parse_time_part(time, &mut d, 3)?;
        d.tz = tz;
        Some(d)
    }

    /// Parses a time (`10`, `10:30`, `10:30:00.000`); no timezone allowed.
    pub(crate) fn parse_time(s: &str) -> Option<PartialDt> {
        let mut d = PartialDt::blank();
        d.is_time = true;
        parse_time_part(s, &mut d, 3)?;
        Some(d)
    }

    /// The value in UTC when a timezone is present (and the precision reaches hours).
    fn to_utc(self) -> PartialDt {
        let Some(tz) = self.tz else { return self };
        if self.is_time || self.prec < Prec::Hour {
            return self;
        }
        let Some(dt) = self.naive() else { return self };
        let u = dt - Duration::minutes(i64::from(tz));
        let mut out = self;
        out.set_naive(u);
        out.tz = Some(0);
        out
    }

    fn naive(self) -> Option<NaiveDateTime> {
        let d = NaiveDate::from_ymd_opt(self.c[0], self.c[1] as u32, self.c[2] as u32)?;
        let t = NaiveTime::from_hms_milli_opt(
            self.c[3] as u32,
            self.c[4] as u32,
            self.c[5] as u32,
            self.c[6] as u32,
        )?;
        Some(d.and_time(t))
    }

    fn set_naive(&mut self, n: NaiveDateTime) {
        self.c = [
            n.year(),
            n.month() as i32,
            n.day() as i32,
            n.hour() as i32,
            n.minute() as i32,
            n.second() as i32,
            (n.nanosecond() / 1_000_000) as i32,
        ];
    }

    /// Ordering per FHIRPath §6.2: `None` when the precisions differ before a difference
    /// is found, or when only one side has a timezone.
    pub(crate) fn compare(self, o: PartialDt) -> Option<Ordering> {
        if self.is_time != o.is_time {
            return None;
        }
        if self.tz.is_some() != o.tz.is_some() && self.prec >= Prec::Hour && o.prec >= Prec::Hour {
            return None;
        }
        let (a, b) = (self.to_utc(), o.to_utc());
        let start = if self.is_time { 3 } else { 0 };
        // Seconds and milliseconds are one precision (§6.2: "seconds ... decimal").
        let pa = if a.prec == Prec::Millis {
            Prec::Second
        } else {
            a.prec
        } as usize;
        let pb = if b.prec == Prec::Millis {
            Prec::Second
        } else {
            b.prec
        } as usize;
        for i in start..=pa.min(pb) {
            let (x, y) = if i == 5 {
                (a.c[5] * 1000 + a.c[6], b.c[5] * 1000 + b.c[6])
            } else {
                (a.c[i], b.c[i])
            };
            if x != y {
                return Some(x.cmp(&y));
            }
        }
        if pa == pb {
            Some(Ordering::Equal)
        } else {
            None
        }
    }

    /// Adds a calendar quantity (FHIRPath §6.6.2 "Date/Time Arithmetic").
    pub(crate) fn add(self, amount: &Dec, unit: &str) -> Option<PartialDt> {
        let unit = calendar_unit(unit)?;
        let n = amount.trunc();
        // Bounded so that no chrono constructor or addition below can overflow; results
        // outside years 1-9999 are rejected at the end.
        if n.abs() > 10_000_000 {
            return None;
        }
        let n64 = i64::try_from(n).ok()?;
        let mut out = self;
        if self.is_time {
            let base =
                NaiveDate::from_ymd_opt(2000, 1, 1)?.and_time(NaiveTime::from_hms_milli_opt(
                    self.c[3] as u32,
                    self.c[4] as u32,
                    self.c[5] as u32,
                    self.c[6] as u32,
                )?);
            let d = match unit {
                "hour" => Duration::hours(n64),
                "minute" => Duration::minutes(n64),
                "second" => Duration::seconds(n64),
                "millisecond" => Duration::milliseconds(n64),
                _ => return None,
            };
            let r = base + d;
            out.c[3] = r.hour() as i32;
            out.c[4] = r.minute() as i32;
            out.c[5] = r.second() as i32;
            out.c[6] = (r.nanosecond() / 1_000_000) as i32;
            return Some(out);
        }
        match unit {
            "year" => {
                out.c[0] = out.c[0].checked_add(i32::try_from(n).ok()?)?;
                if out.prec >= Prec::Day {
                    let last = last_day(out.c[0], out.c[1])?;
                    out.c[2] = out.c[2].min(last);
                }
            }
            "month" => {
                if out.prec == Prec::Year {
                    // Precision is years: add whole years (§6.6.2).
                    out.c[0] += i32::try_from(n / 12).ok()?;
                } else {
                    let total = out.c[0] * 12 + (out.c[1] - 1) + i32::try_from(n).ok()?;
                    out.c[0] = total.div_euclid(12);
                    out.c[1] = total.rem_euclid(12) + 1;
                    if out.prec >= Prec::Day {
                        out.c[2] = out.c[2].min(last_day(out.c[0], out.c[1])?);
                    }
                }
            }
            _ => {
                let (dur, needed) = match unit {
                    "week" => (Duration::weeks(n64), Prec::Day),
                    "day" => (Duration::days(n64), Prec::Day),
                    "hour" => (Duration::hours(n64), Prec::Hour),
                    "minute" => (Duration::minutes(n64), Prec::Minute),
                    // Fractions of the unit are dropped (§6.6.2; suite testPlusDate19).
                    "second" => (Duration::seconds(n64), Prec::Second),
                    _ => (Duration::milliseconds(n64), Prec::Millis),
                };
                if out.prec < needed {
                    // Below the value's precision: convert to whole units of its precision.
                    let secs = dur.num_seconds();
                    let conv = match out.prec {
                        Prec::Year => {
                            out.c[0] += i32::try_from(secs / (365 * 86400)).ok()?;
                            return Some(out);
                        }
                        Prec::Month => {
                            let months = i32::try_from(secs / (30 * 86400)).ok()?;
                            let total = out.c[0] * 12 + (out.c[1] - 1) + months;
                            out.c[0] = total.div_euclid(12);
                            out.c[1] = total.rem_euclid(12) + 1;
                            return Some(out);
                        }
                        Prec::Day => Duration::days(secs / 86400),
                        Prec::Hour => Duration::hours(secs / 3600),
                        _ => Duration::minutes(secs / 60),
                    };
                    let r = out.naive()? + conv;
                    out.set_naive(r);
                } else {
                    let r = out.naive()? + dur;
                    out.set_naive(r);
                }
            }
        }
        (1..=9999).contains(&out.c[0]).then_some(out)
    }
}

fn last_day(y: i32, m: i32) -> Option<i32> {
    let first = NaiveDate::from_ymd_opt(y, m as u32, 1)?;
    let next = first.checked_add_months(Months::new(1))?;
    Some((next - first).num_days() as i32)
}

/// Maps a calendar keyword or UCUM time unit to a calendar unit name.
pub(crate) fn calendar_unit(u: &str) -> Option<&'static str> {
    Some(match u {
        "year" | "years" | "a" => "year",
        "month" | "months" | "mo" => "month",
        "week" | "weeks" | "wk" => "week",
        "day" | "days" | "d" => "day",
        "hour" | "hours" | "h" => "hour",
        "minute" | "minutes" | "min" => "minute",
        "second" | "seconds" | "s" => "second",
        "millisecond" | "milliseconds" | "ms" => "millisecond",
        _ => return None,
    })
}

fn split_tz(t: &str) -> Option<(&str, Option<i32>)> {
    if let Some(rest) = t.strip_suffix('Z') {
        return Some((rest, Some(0)));
    }
    if let Some(i) = t.rfind(['+', '-']) {
        let (time, tz) = t.split_at(i);
        let sign = if tz.starts_with('-') { -1 } else { 1 };
        let (h, m) = tz[1..].split_once(':')?;
        let (h, m) = (num(h, 2)?, num(m, 2)?);
        if h > 14 || m > 59 {
            return None;
        }
        return Some((time, Some(sign * (h * 60 + m))));
    }
    Some((t, None))
}

impl fmt::Display for PartialDt {
    /// Formats in FHIR/FHIRPath text form (without the `@`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.c;
        if !self.is_time {
            write!(f, "{:04}", c[0])?;
            if self.prec >= Prec::Month {
                write!(f, "-{:02}", c[1])?;
            }
            if self.prec >= Prec::Day {
                write!(f, "-{:02}", c[2])?;
            }
            if self.prec < Prec::Hour {
                return Ok(());
            }
            f.write_str("T")?;
        }
        write!(f, "{:02}", c[3])?;
        if self.prec >= Prec::Minute {
            write!(f, ":{:02}", c[4])?;
        }
        if self.prec >= Prec::Second {
            write!(f, ":{:02}", c[5])?;
        }
        if self.prec >= Prec::Millis {
            write!(f, ".{:03}", c[6])?;
        }
        if let Some(tz) = self.tz {
            if tz == 0 {
                f.write_str("Z")?;
            } else {
                let sign = if tz < 0 { '-' } else { '+' };
                write!(f, "{sign}{:02}:{:02}", tz.abs() / 60, tz.abs() % 60)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn valid_date(s: &str) -> bool {
    PartialDt::parse_date(s).is_some()
}

pub(crate) fn valid_datetime(s: &str) -> bool {
    PartialDt::parse_datetime(s).is_some()
}

pub(crate) fn valid_time(s: &str) -> bool {
    PartialDt::parse_time(s).is_some()
}

/// Minimal UCUM support (http://unitsofmeasure.org/ucum.html) for quantity comparison:
/// metric prefixes on g, m, L, s, mol and a few customary units, products (`.`), quotients
/// (`/`) and integer exponents. Returns the factor to the base units and the dimension
/// vector (m, g, s, mol, K, L-as-m3 folded, other).
pub(crate) fn ucum_canonical(unit: &str) -> Option<(f64, [i32; 6])> {
    let unit = unit.trim();
    if unit.is_empty() || unit == "1" {
        return Some((1.0, [0; 6]));
    }
    let mut factor = 1.0;
    let mut dims = [0i32; 6];
    let mut sign = 1;
    let mut rest = unit;
    if let Some(r) = rest.strip_prefix('/') {
        sign = -1;
        rest = r;
    }
    let mut term = String::new();
    let mut terms: Vec<(String, i32)> = Vec::new();
    for ch in rest.chars() {
        match ch {
            '.' | '/' if !term.is_empty() => {
                terms.push((std::mem::take(&mut term), sign));
                if ch == '/' {
                    sign = -1;
                }
            }
            _ => term.push(ch),
        }
    }
    if !term.is_empty() {
        terms.push((term, sign));
    }
    for (t, s) in terms {
        // Exponent suffix.
        let split = t
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_digit() || *c == '-')
            .last()
            .map(|(i, _)| i);
        let (atom, exp) = match split {
            Some(i) if i > 0 && !t.ends_with(']') => (&t[..i], t[i..].parse::<i32>().ok()?),
            _ => (t.as_str(), 1),
        };
        let (f, d) = ucum_atom(atom)?;
        let e = exp * s;
        factor *= f.powi(e);
        for k in 0..6 {
            dims[k] += d[k] * e;
        }
    }
    Some((factor, dims))
}

fn ucum_atom(a: &str) -> Option<(f64, [i32; 6])> {
    const M: [i32; 6] = [1, 0, 0, 0, 0, 0];
    const G: [i32; 6] = [0, 1, 0, 0, 0, 0];
    const S: [i32; 6] = [0, 0, 1, 0, 0, 0];
    const MOL: [i32; 6] = [0, 0, 0, 1, 0, 0];
    const K: [i32; 6] = [0, 0, 0, 0, 1, 0];
    const L: [i32; 6] = [3, 0, 0, 0, 0, 0];
    let base = |b: &str| -> Option<(f64, [i32; 6])> {
        Some(match b {
            "m" => (1.0, M),
            "g" => (1.0, G),
            "s" => (1.0, S),
            "mol" => (1.0, MOL),
            "K" => (1.0, K),
            "L" | "l" => (0.001, L),
            "min" => (60.0, S),
            "h" => (3600.0, S),
            "d" => (86400.0, S),
            "wk" => (604_800.0, S),
            "mo" => (2_629_800.0, S),
            "a" => (31_557_600.0, S),
            "[in_i]" => (0.0254, M),
            "[ft_i]" => (0.3048, M),
            "[lb_av]" => (453.592_37, G),
            "[oz_av]" => (28.349_523_125, G),
            "%" => (0.01, [0; 6]),
            "1" => (1.0, [0; 6]),
            _ => return None,
        })
    };
    if let Some(r) = base(a) {
        return Some(r);
    }
    if a.starts_with('[') {
        return None;
    }
    for (p, f) in [
        ("da", 1e1),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("h", 1e2),
        ("d", 1e-1),
        ("c", 1e-2),
        ("m", 1e-3),
        ("u", 1e-6),
        ("n", 1e-9),
        ("p", 1e-12),
    ] {
        if let Some(b) = a.strip_prefix(p)
            && matches!(b, "m" | "g" | "s" | "mol" | "L" | "l")
        {
            let (bf, d) = base(b)?;
            return Some((f * bf, d));
        }
    }
    None
}
