//! Parser behaviour: delimiters, terminators, character sets, escapes, positions, errors.

use hl7::{Charset, Location, ParseError, Version, parse};

const ADT: &str = "MSH|^~\\&|SEND|FAC1|RECV|FAC2|20240101120000||ADT^A01^ADT_A01|CTRL1|P|2.5.1\r\
EVN|A01|20240101120000\r\
PID|1||111^^^H^MR~222^^^SSA^SS||Doe\\S\\Smith^Jane&J||19800101|F\r\
ZXT|custom|a&b&c\r\
OBX|1|ST|code||first\r\
OBX|2|ST|code||second\r";

#[test]
fn five_encoding_characters_do_not_shift_msh_fields() {
    let msg = parse(
        b"MSH|^~\\&#|APP|FAC|RAPP|RFAC|20240101||ORU^R01^ORU_R01|ID7|P|2.7\rNTE|1||cut#\\P\\\r",
    )
    .unwrap();
    assert_eq!(msg.delimiters().truncation(), Some('#'));
    assert_eq!(msg.get("MSH-2").as_deref(), Some("^~\\&#"));
    assert_eq!(msg.get("MSH-3").as_deref(), Some("APP"));
    assert_eq!(msg.get("MSH-9.2").as_deref(), Some("R01"));
    assert_eq!(msg.get("MSH-10").as_deref(), Some("ID7"));
    assert_eq!(msg.get("MSH-12").as_deref(), Some("2.7"));
    assert_eq!(msg.version(), Version::V2_7);
    assert_eq!(msg.get("NTE-3").as_deref(), Some("cut##"));
}

#[test]
fn encoding_characters_are_read_from_msh2_not_assumed() {
    let msg = parse(b"MSH^~|\\&^S^F^R^F^2012^^ADT~A24^X1^T^2.4\rPID^1^^11~22|33~44^^SMITH~JOHN\r")
        .unwrap();
    assert_eq!(msg.delimiters().field(), '^');
    assert_eq!(msg.get("MSH-1").as_deref(), Some("^"));
    assert_eq!(msg.get("MSH-9.1").as_deref(), Some("ADT"));
    assert_eq!(msg.get("MSH-9.2").as_deref(), Some("A24"));
    assert_eq!(msg.get("PID-3[2].2").as_deref(), Some("44"));
    assert_eq!(msg.get("PID-5.2").as_deref(), Some("JOHN"));
}

#[test]
fn cr_lf_crlf_and_mixed_terminators_give_the_same_message() {
    let cr = parse(ADT.as_bytes()).unwrap();
    for eol in ["\n", "\r\n", "\n\r"] {
        let text = ADT.replace('\r', eol);
        assert_eq!(parse(text.as_bytes()).unwrap(), cr, "{eol:?}");
    }
    let mixed = ADT.replacen('\r', "\n", 2).replacen('\r', "\r\n", 1);
    assert_eq!(parse(mixed.as_bytes()).unwrap(), cr);
    let blank_lines = ADT.replace('\r', "\r\n\r\n");
    assert_eq!(parse(blank_lines.as_bytes()).unwrap(), cr);
}

#[test]
fn utf8_bom_and_leading_line_breaks_are_skipped() {
    let mut bytes = b"\xEF\xBB\xBF\r\n".to_vec();
    bytes.extend_from_slice(ADT.as_bytes());
    assert_eq!(parse(&bytes).unwrap(), parse(ADT.as_bytes()).unwrap());
}

#[test]
fn msh_positions_follow_the_standard_numbering() {
    let msg = parse(ADT.as_bytes()).unwrap();
    assert_eq!(msg.get("MSH-1").as_deref(), Some("|"));
    assert_eq!(msg.get("MSH-2").as_deref(), Some("^~\\&"));
    assert_eq!(msg.get("MSH-7").as_deref(), Some("20240101120000"));
    assert_eq!(msg.message_type().to_string(), "ADT^A01^ADT_A01");
    assert_eq!(msg.control_id(), "CTRL1");
    assert_eq!(msg.version(), Version::V2_5_1);
    assert_eq!(
        msg.raw(&"MSH-9".parse().unwrap()).as_deref(),
        Some("ADT^A01^ADT_A01")
    );
}

#[test]
fn repetitions_components_and_subcomponents_are_addressable() {
    let msg = parse(ADT.as_bytes()).unwrap();
    assert_eq!(msg.get("PID-3").as_deref(), Some("111"));
    assert_eq!(msg.get("PID-3[2].1").as_deref(), Some("222"));
    assert_eq!(msg.get("PID-3(2).5").as_deref(), Some("SS"));
    assert_eq!(msg.get("PID-5.2.2").as_deref(), Some("J"));
    let loc = Location::new("PID", 5).component(2).subcomponent(1);
    assert_eq!(msg.value(&loc).as_deref(), Some("Jane"));
    assert_eq!(msg.get("OBX[2]-5").as_deref(), Some("second"));
    assert_eq!(msg.segments_named("OBX").count(), 2);
    let pid = msg.segment("PID").unwrap();
    assert_eq!(pid.field(3).unwrap().repetitions().len(), 2);
}

#[test]
fn absent_positions_are_none_and_empty_ones_are_empty() {
    let msg = parse(ADT.as_bytes()).unwrap();
    assert_eq!(msg.get("PID-2").as_deref(), Some(""));
    assert_eq!(msg.get("PID-30"), None);
    assert_eq!(msg.get("PID-3[3]"), None);
    assert_eq!(msg.get("PID-3.9"), None);
    assert_eq!(msg.get("OBX[3]-1"), None);
    assert_eq!(msg.get("NK1-1"), None);
    assert_eq!(msg.get("not a location"), None);
}

#[test]
fn escapes_are_kept_until_a_leaf_value_is_read() {
    let msg = parse(ADT.as_bytes()).unwrap();
    let loc: Location = "PID-5.1".parse().unwrap();
    assert_eq!(msg.raw(&loc).as_deref(), Some("Doe\\S\\Smith"));
    assert_eq!(msg.value(&loc).as_deref(), Some("Doe^Smith"));
}

#[test]
fn z_segments_are_kept_like_any_other() {
    let msg = parse(ADT.as_bytes()).unwrap();
    let ids: Vec<&str> = msg.segments().iter().map(|s| s.id()).collect();
    assert_eq!(ids, ["MSH", "EVN", "PID", "ZXT", "OBX", "OBX"]);
    assert_eq!(msg.get("ZXT-2.1.3").as_deref(), Some("c"));
}

#[test]
fn er7_output_reproduces_the_input() {
    let msg = parse(ADT.as_bytes()).unwrap();
    assert_eq!(msg.to_er7(), ADT);
}

#[test]
fn latin1_charset_from_msh18_is_transcoded() {
    let bytes = b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5|||||FRA|8859/1\rPID|1||1||M\xfcller^Ren\xe9\\XE9\\\r";
    let msg = parse(bytes).unwrap();
    assert_eq!(msg.charset(), Charset::Iso8859(1));
    assert_eq!(msg.get("PID-5.1").as_deref(), Some("Müller"));
    // The hex escape is in the message's character set too.
    assert_eq!(msg.get("PID-5.2").as_deref(), Some("Renéé"));
}

#[test]
fn cyrillic_8859_5_is_transcoded() {
    let bytes = b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.6|||||RUS|8859/5~UNICODE UTF-8\rPID|1||1||\xb8\xd2\xd0\xdd\xde\xd2\r";
    let msg = parse(bytes).unwrap();
    assert_eq!(msg.get("PID-5").as_deref(), Some("Иванов"));
}

#[test]
fn big5_trail_bytes_that_look_like_delimiters_do_not_split() {
    // Big5 0xA4 0x7C is one character whose second byte is '|'.
    let ch = Charset::Big5.decode(&[0xA4, 0x7C]).unwrap();
    assert_eq!(ch.chars().count(), 1);
    let bytes = b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5|||||TWN|BIG-5\rPID|1||1||\xa4\x7c|x\r";
    let msg = parse(bytes).unwrap();
    assert_eq!(msg.get("PID-5").as_deref(), Some(ch.as_str()));
    assert_eq!(msg.get("PID-6").as_deref(), Some("x"));
}

#[test]
fn utf8_is_accepted_when_msh18_is_empty() {
    let msg =
        parse("MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rPID|1||1||SEBASTIÁN\r".as_bytes()).unwrap();
    assert_eq!(msg.charset(), Charset::Utf8);
    assert_eq!(msg.get("PID-5").as_deref(), Some("SEBASTIÁN"));
    assert_eq!(msg.get("PID-5.1").as_deref(), Some("SEBASTIÁN"));
}

#[test]
fn invalid_utf8_without_msh18_is_an_error_with_its_offset() {
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rPID|\xff\r").unwrap_err();
    assert!(
        matches!(err, ParseError::InvalidText { ref charset, offset: 43 } if charset == "UTF-8"),
        "{err:?}"
    );
}

#[test]
fn eight_bit_bytes_in_a_message_declared_ascii_are_rejected() {
    let err =
        parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5|||||USA|ASCII\rPID|\xe9\r").unwrap_err();
    assert!(matches!(err, ParseError::InvalidText { .. }), "{err:?}");
}

#[test]
fn unknown_charset_is_an_error() {
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5|||||USA|EBCDIC\r").unwrap_err();
    assert!(
        matches!(err, ParseError::UnsupportedCharset(ref c) if c == "EBCDIC"),
        "{err:?}"
    );
    let err =
        parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5|||||USA|UNICODE UTF-16\r").unwrap_err();
    assert!(matches!(err, ParseError::UnsupportedCharset(_)), "{err:?}");
}

#[test]
fn versions_2_3_to_2_8_are_accepted_with_optional_components() {
    for v in [
        "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2",
    ] {
        let text = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|{v}^USA\r");
        let msg = parse(text.as_bytes()).unwrap();
        assert_eq!(msg.version().as_str(), v);
    }
}

#[test]
fn unsupported_version_error_keeps_the_header() {
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|CTRL9|P|2.2\rPID|1\r").unwrap_err();
    let ParseError::UnsupportedVersion { version, header } = err else {
        panic!("expected UnsupportedVersion");
    };
    assert_eq!(version, "2.2");
    assert_eq!(header.control_id(), "CTRL9");
    assert_eq!(header.message_type().to_string(), "ORU^R01");
    for v in ["2.1", "2.9", "3", "2.8.10000000000000000000"] {
        let text = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|{v}\r");
        assert!(matches!(
            parse(text.as_bytes()),
            Err(ParseError::UnsupportedVersion { .. })
        ));
    }
}

#[test]
fn missing_message_type_or_version_names_the_msh_field() {
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024|||1|P|2.5\r").unwrap_err();
    assert!(
        matches!(
            err,
            ParseError::MissingField {
                segment: "MSH",
                field: 9,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "MSH-9 (Message Type) is required but empty"
    );
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P\r").unwrap_err();
    assert!(
        matches!(err, ParseError::MissingField { field: 12, .. }),
        "{err:?}"
    );
    let err = parse(b"MSH\r").unwrap_err();
    assert!(
        matches!(err, ParseError::MissingField { field: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn structural_errors_carry_the_segment_index() {
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1\rpv1|x\r").unwrap_err();
    assert!(
        matches!(err, ParseError::InvalidSegmentId { index: 3, ref found } if found == "pv1|x")
    );
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPIDX|1\r").unwrap_err();
    assert!(
        matches!(err, ParseError::InvalidSegmentId { index: 2, .. }),
        "{err:?}"
    );
    let err = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rMSH|^~\\&|A\r").unwrap_err();
    assert!(
        matches!(err, ParseError::MultipleMessages { index: 2 }),
        "{err:?}"
    );
    assert!(matches!(parse(b""), Err(ParseError::Empty)));
    assert!(matches!(parse(b"\xEF\xBB\xBF\r\n"), Err(ParseError::Empty)));
    assert!(matches!(
        parse(b"PID|1\rMSH|^~\\&|"),
        Err(ParseError::MissingMsh)
    ));
}

#[test]
fn broken_delimiters_are_errors() {
    let cases: [&[u8]; 5] = [
        b"MSHH0\r",
        b"MSH|^~ &|A|B|C|D|2024||ORU^R01|1|T|2.3\r",
        b"MSH|^~\\\\&|A|B|C|D|2024||ADT^A01|1|T|2.6\r",
        b"MSH|^~}|A|B|C|D|2024||BAR^P01|1|P|2.4\r",
        b"MSH|^~\\&!#|A|B|C|D|2024||BAR^P01|1|P|2.4\r",
    ];
    for bytes in cases {
        let err = parse(bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ParseError::InvalidFieldSeparator { .. }
                    | ParseError::InvalidEncodingCharacters { .. }
            ),
            "{err:?}"
        );
    }
}
