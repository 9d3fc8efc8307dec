//! `FhirDateTime` parsing, precision and search ranges (R4 search.html §3.2.6).

use fhir_model::datetime::{DateTimeError, FhirDateTime, Precision};

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;

/// Microseconds since the epoch of a UTC date-time, computed independently with chrono.
fn micros(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, mi, s))
        .expect("valid")
        .and_utc()
        .timestamp_micros()
}

#[test]
fn partial_dates_cover_their_whole_period() {
    let y = FhirDateTime::parse("2020").unwrap();
    assert_eq!(y.precision(), Precision::Year);
    assert_eq!(
        y.to_range(),
        (micros(2020, 1, 1, 0, 0, 0), micros(2021, 1, 1, 0, 0, 0))
    );
    let m = FhirDateTime::parse("2020-02").unwrap();
    assert_eq!(m.precision(), Precision::Month);
    assert_eq!(
        m.to_range(),
        (micros(2020, 2, 1, 0, 0, 0), micros(2020, 3, 1, 0, 0, 0))
    );
    let m = FhirDateTime::parse("2019-12").unwrap();
    assert_eq!(m.to_range().1, micros(2020, 1, 1, 0, 0, 0));
    let d = FhirDateTime::parse("2020-01-02").unwrap();
    assert_eq!(d.precision(), Precision::Day);
    assert_eq!(
        d.to_range(),
        (
            micros(2020, 1, 2, 0, 0, 0),
            micros(2020, 1, 2, 0, 0, 0) + DAY
        )
    );
}

#[test]
fn times_are_converted_to_utc() {
    let t = FhirDateTime::parse("2020-01-02T10:00:00+01:00").unwrap();
    assert_eq!(t.precision(), Precision::Second);
    assert_eq!(t.offset_minutes(), Some(60));
    let low = micros(2020, 1, 2, 9, 0, 0);
    assert_eq!(t.to_range(), (low, low + SECOND));
    let z = FhirDateTime::parse("2020-01-02T23:30:00-05:30").unwrap();
    assert_eq!(z.to_range().0, micros(2020, 1, 3, 5, 0, 0));
    let minute = FhirDateTime::parse("2020-01-02T10:00Z").unwrap();
    assert_eq!(minute.precision(), Precision::Minute);
    assert_eq!(minute.to_range().1 - minute.to_range().0, 60 * SECOND);
    // No zone: taken as UTC.
    let local = FhirDateTime::parse("2020-01-02T10:00:00").unwrap();
    assert_eq!(local.to_range().0, micros(2020, 1, 2, 10, 0, 0));
}

#[test]
fn fractional_seconds_set_the_precision() {
    let t = FhirDateTime::parse("2020-01-02T10:00:00.5Z").unwrap();
    assert_eq!(t.precision(), Precision::Fraction(1));
    let low = micros(2020, 1, 2, 10, 0, 0) + 500_000;
    assert_eq!(t.to_range(), (low, low + 100_000));
    let t = FhirDateTime::parse("2020-01-02T10:00:00.123Z").unwrap();
    assert_eq!(
        t.to_range(),
        (low - 500_000 + 123_000, low - 500_000 + 124_000)
    );
    let t = FhirDateTime::parse("2020-01-02T10:00:00.123456789Z").unwrap();
    assert_eq!(t.precision(), Precision::Fraction(9));
    assert_eq!(t.to_range().1 - t.to_range().0, 1);
    assert_eq!(t.to_string(), "2020-01-02T10:00:00.123456789Z");
}

#[test]
fn values_print_as_written() {
    for s in [
        "2020",
        "2020-01",
        "2020-01-02",
        "2020-01-02T10:00:00+01:00",
        "1999-12-31T23:59:59.120Z",
        "2020-01-02T10:00-03:30",
    ] {
        assert_eq!(FhirDateTime::parse(s).unwrap().to_string(), s);
    }
    let parsed: FhirDateTime = "2020-05".parse().unwrap();
    assert_eq!(parsed.month(), Some(5));
}

#[test]
fn leap_years_and_month_lengths_are_checked() {
    assert!(FhirDateTime::parse_date("2020-02-29").is_ok());
    assert!(FhirDateTime::parse_date("2000-02-29").is_ok());
    assert_eq!(
        FhirDateTime::parse_date("1900-02-29"),
        Err(DateTimeError::Range("day of month"))
    );
    assert!(FhirDateTime::parse_date("2021-04-31").is_err());
    assert!(FhirDateTime::parse_date("2021-13").is_err());
    assert!(FhirDateTime::parse_date("0000").is_err());
    assert_eq!(
        FhirDateTime::parse("2020-02").unwrap().to_range().1
            - FhirDateTime::parse("2020-02").unwrap().to_range().0,
        29 * DAY
    );
}

#[test]
fn fhir_types_have_their_own_forms() {
    // date: no time.
    assert!(FhirDateTime::parse_date("2020-01-02T10:00:00Z").is_err());
    // dateTime: seconds and zone required with a time.
    assert!(FhirDateTime::parse_date_time("2020").is_ok());
    assert!(FhirDateTime::parse_date_time("2020-01-02T10:00:00.1234+14:00").is_ok());
    assert_eq!(
        FhirDateTime::parse_date_time("2020-01-02T10:00:00"),
        Err(DateTimeError::MissingZone)
    );
    assert!(FhirDateTime::parse_date_time("2020-01-02T10:00Z").is_err());
    // instant: full precision and zone.
    assert!(FhirDateTime::parse_instant("2020-01-02T10:00:00Z").is_ok());
    assert!(FhirDateTime::parse_instant("2020-01-02").is_err());
    assert_eq!(
        FhirDateTime::parse_instant("2020-01-02T10:00:00"),
        Err(DateTimeError::MissingZone)
    );
}

#[test]
fn malformed_text_is_rejected() {
    for bad in [
        "",
        "20",
        "2020-1",
        "2020-01-2",
        "2020/01/02",
        "2020-01-02T",
        "2020-01-02T10",
        "2020-01-02T24:00:00Z",
        "2020-01-02T10:60:00Z",
        "2020-01-02T10:00:61Z",
        "2020-01-02T10:00:00.Z",
        "2020-01-02T10:00:00+15:00",
        "2020-01-02T10:00:00+0100",
        " 2020",
        "2020-01-02T10:00:00Z ",
        "２０２０",
        "2020-01-02T10:00:00.5+01:00x",
    ] {
        assert!(
            FhirDateTime::parse(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn extreme_years_do_not_overflow() {
    let (low, high) = FhirDateTime::parse("0001").unwrap().to_range();
    assert_eq!(low, micros(1, 1, 1, 0, 0, 0));
    assert!(high > low);
    let (low, high) = FhirDateTime::parse("9999-12-31T23:59:60-14:00")
        .unwrap()
        .to_range();
    assert!(high > low);
}
