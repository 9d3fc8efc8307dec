//! ACK building, checked by parsing the ACK back with our own parser.

use chrono::DateTime;
use hl7::ack::{self, AckBuilder, AckCode, ErrorCode, ErrorDetail, Severity};
use hl7::{Charset, Message, ParseError, parse};

fn incoming(version: &str) -> Message {
    let text = format!(
        "MSH|^~\\&|LAB^1.2.3^ISO|NORTH|EHR|SOUTH|20240101120000||ORU^R01^ORU_R01|MSG-77|T|{version}\rPID|1||42\r"
    );
    parse(text.as_bytes()).unwrap()
}

fn fixed_time() -> DateTime<chrono::FixedOffset> {
    DateTime::parse_from_rfc3339("2024-03-04T05:06:07+01:00").unwrap()
}

#[test]
fn ack_swaps_sender_and_receiver_and_echoes_the_control_id() {
    let ack = AckBuilder::new(AckCode::AA)
        .control_id("ACK-1")
        .timestamp(fixed_time())
        .build(&incoming("2.5.1"));
    assert_eq!(
        ack.as_str(),
        "MSH|^~\\&|EHR|SOUTH|LAB^1.2.3^ISO|NORTH|20240304050607+0100||ACK^R01^ACK|ACK-1|T|2.5.1\rMSA|AA|MSG-77\r"
    );
    let parsed = parse(ack.as_str().as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-1").as_deref(), Some("AA"));
    assert_eq!(parsed.get("MSA-2").as_deref(), Some("MSG-77"));
    assert_eq!(parsed.get("MSH-5").as_deref(), Some("LAB"));
    assert_eq!(parsed.get("MSH-5.2").as_deref(), Some("1.2.3"));
    assert_eq!(parsed.get("MSH-3").as_deref(), Some("EHR"));
    assert_eq!(parsed.message_type().to_string(), "ACK^R01^ACK");
    assert_eq!(parsed.segment("ERR"), None);
}

#[test]
fn ack_keeps_five_encoding_characters_version_and_charset() {
    let msg = parse(
        b"MSH|^~\\&#|A|B|C|D|2024||ADT^A08^ADT_A01|X#1|P|2.7|||||DEU|8859/1\rPID|1||1||M\xfcller\r",
    )
    .unwrap();
    let ack = AckBuilder::new(AckCode::AE)
        .error(ErrorDetail::new(ErrorCode::UnknownKeyIdentifier).message("Patient Müller unknown"))
        .build(&msg);
    assert!(ack.as_str().starts_with("MSH|^~\\&#|C|D|A|B|"));
    assert_eq!(ack.charset(), Charset::Iso8859(1));
    let bytes = ack.to_bytes();
    assert!(
        bytes.windows(6).any(|w| w == b"M\xfcller"),
        "encoded in 8859/1"
    );
    let parsed = parse(&bytes).unwrap();
    assert_eq!(parsed.get("MSH-2").as_deref(), Some("^~\\&#"));
    assert_eq!(parsed.get("MSH-12").as_deref(), Some("2.7"));
    assert_eq!(parsed.get("MSH-18").as_deref(), Some("8859/1"));
    assert_eq!(parsed.get("MSA-2").as_deref(), Some("X#1"));
    assert_eq!(parsed.get("ERR-3").as_deref(), Some("204"));
    assert_eq!(
        parsed.get("ERR-8").as_deref(),
        Some("Patient Müller unknown")
    );
}

#[test]
fn error_ack_has_err_location_code_severity_and_escaped_user_message() {
    let text = "PID-3 must be |MRN^site| & not ~empty~ \\ or\r\nnewline #";
    let ack = AckBuilder::new(AckCode::AE)
        .error(
            ErrorDetail::new(ErrorCode::RequiredFieldMissing)
                .at("PID", 1, Some(3))
                .message(text),
        )
        .error(ErrorDetail::new(ErrorCode::TableValueNotFound).severity(Severity::Warning))
        .build(&incoming("2.5.1"));
    let parsed = parse(ack.as_str().as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-1").as_deref(), Some("AE"));
    assert_eq!(parsed.get("MSA-2").as_deref(), Some("MSG-77"));
    assert_eq!(
        parsed.raw(&"ERR-2".parse().unwrap()).as_deref(),
        Some("PID^1^3")
    );
    assert_eq!(
        parsed.raw(&"ERR-3".parse().unwrap()).as_deref(),
        Some("101^Required field missing^HL70357")
    );
    assert_eq!(parsed.get("ERR-4").as_deref(), Some("E"));
    assert_eq!(parsed.get("ERR-8").as_deref(), Some(text));
    assert_eq!(parsed.get("ERR[2]-3").as_deref(), Some("103"));
    assert_eq!(parsed.get("ERR[2]-4").as_deref(), Some("W"));
}

#[test]
fn negative_ack_without_details_gets_an_internal_error() {
    for code in [AckCode::AE, AckCode::AR, AckCode::CE, AckCode::CR] {
        let parsed = parse(
            AckBuilder::new(code)
                .build(&incoming("2.6"))
                .as_str()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.get("MSA-1").as_deref(), Some(code.as_str()));
        assert_eq!(parsed.get("ERR-3").as_deref(), Some("207"));
    }
}

#[test]
fn enhanced_mode_commit_accept_has_no_err() {
    let parsed = parse(
        AckBuilder::new(AckCode::CA)
            .build(&incoming("2.8"))
            .as_str()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(parsed.get("MSA-1").as_deref(), Some("CA"));
    assert_eq!(parsed.get("MSA-2").as_deref(), Some("MSG-77"));
    assert_eq!(parsed.segment("ERR"), None);
}

#[test]
fn pre_2_5_ack_uses_err_1_and_msa_3() {
    let ack = AckBuilder::new(AckCode::AE)
        .error(
            ErrorDetail::new(ErrorCode::DataTypeError)
                .at("OBX", 2, Some(5))
                .message("bad NM"),
        )
        .build(&incoming("2.4"));
    let parsed = parse(ack.as_str().as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-3").as_deref(), Some("bad NM"));
    assert_eq!(
        parsed.raw(&"ERR-1".parse().unwrap()).as_deref(),
        Some("OBX^2^5^102&Data type error&HL70357")
    );
    assert_eq!(parsed.message_type().to_string(), "ACK^R01^ACK");
    let v23 = parse(ack::accept(&incoming("2.3")).as_str().as_bytes()).unwrap();
    assert_eq!(
        v23.message_type().to_string(),
        "ACK^R01",
        "v2.3 MSH-9 has no structure"
    );
}

#[test]
fn generated_control_ids_are_20_characters_and_distinct() {
    let msg = incoming("2.5");
    let a = parse(ack::accept(&msg).as_str().as_bytes())
        .unwrap()
        .control_id();
    let b = parse(ack::accept(&msg).as_str().as_bytes())
        .unwrap()
        .control_id();
    assert_eq!(a.len(), 20);
    assert_ne!(a, b);
}

#[test]
fn unsupported_version_is_rejected_with_ar_203_echoing_msh_10() {
    let input = b"MSH|^~\\&|OLD|SYS|NEW|SYS|1994||ORU^R01|OLD-5|P|2.2\rPID|1\r";
    let err = parse(input).unwrap_err();
    assert_eq!(AckCode::for_parse_error(&err), AckCode::AR);
    let nak = ack::reject(input, &err);
    assert!(nak.as_str().contains("\rMSA|AR|OLD-5|"), "{}", nak.as_str());
    assert!(
        nak.as_str()
            .contains("\rERR|MSH^1^12^203&Unsupported version id&HL70357")
    );
    let ParseError::UnsupportedVersion { header, .. } = parse(nak.as_str().as_bytes()).unwrap_err()
    else {
        panic!("the NAK echoes v2.2");
    };
    assert_eq!(header.field(5), "OLD");
}

#[test]
fn nak_for_unparsable_input_extracts_the_control_id_best_effort() {
    let input = b"MSH|^~ &|SEND|FAC|RECV|FAC|2024||ORU^R01|CTRL^42|P|2.5\rPID|1\r";
    let err = parse(input).unwrap_err();
    let nak = ack::reject(input, &err);
    let parsed = parse(nak.as_str().as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-1").as_deref(), Some("AE"));
    assert_eq!(parsed.get("MSA-2").as_deref(), Some("CTRL^42"));
    assert_eq!(parsed.get("MSH-5").as_deref(), Some("SEND"));
    assert_eq!(
        parsed.raw(&"ERR-2".parse().unwrap()).as_deref(),
        Some("MSH^1^2")
    );
    assert_eq!(parsed.get("ERR-3").as_deref(), Some("102"));

    let nak = ack::reject(b"\x00garbage", &ParseError::MissingMsh);
    let parsed = parse(nak.as_str().as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-2").as_deref(), Some(""));
    assert_eq!(parsed.get("MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(parsed.get("ERR-3").as_deref(), Some("100"));
}

#[test]
fn oversize_frame_is_rejected_with_ar_and_its_control_id() {
    let head = b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|BIG-1|P|2.5.1\rOBX|1|ED|||AAAA";
    let parsed = parse(ack::reject_oversize(head, 1024).as_str().as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-1").as_deref(), Some("AR"));
    assert_eq!(parsed.get("MSA-2").as_deref(), Some("BIG-1"));
    assert_eq!(parsed.get("ERR-3").as_deref(), Some("207"));
    assert!(parsed.get("ERR-8").unwrap().contains("1024"));
}
