//! The shared HL7 v2 sample files (`shared/testdata/hl7v2`, described by its INDEX.tsv):
//! every good file splits and parses with the type and version INDEX.tsv records, and
//! every fuzzer-found bad input is refused without a panic.

use hl7::{ParseError, parse, split_messages};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/hl7v2");
    assert!(
        dir.join("INDEX.tsv").is_file(),
        "HL7 v2 test data not found at {} (shared/ must sit beside the repository)",
        dir.display()
    );
    dir
}

struct Row {
    file: String,
    messages: usize,
    types: String,
    versions: String,
    segments: usize,
}

fn index() -> Vec<Row> {
    let text = std::fs::read_to_string(data_dir().join("INDEX.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(
        header[..7],
        [
            "file", "bytes", "messages", "types", "versions", "eol", "segments"
        ]
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Row {
                file: c[0].to_owned(),
                messages: c[2].parse().unwrap(),
                types: c[3].to_owned(),
                versions: c[4].to_owned(),
                segments: c[6].parse().unwrap(),
            }
        })
        .collect()
}

fn error_kind(e: &ParseError) -> &'static str {
    match e {
        ParseError::UnsupportedVersion { .. } => "UnsupportedVersion",
        ParseError::InvalidEncodingCharacters { .. } => "InvalidEncodingCharacters",
        _ => "other",
    }
}

/// Good-looking sample messages that the parser refuses on purpose, per file: error kind
/// and how many messages.
/// - hapi messages.txt: 8 messages are v2.1/v2.2 (unsupported), one has the three encoding
///   characters `^~}`;
/// - LinuxForHealth sample_unix/sample_win: `MSH|^~\\&|`, a doubled backslash, so escape and
///   subcomponent separator are the same character;
/// - hl7-standard examples-input.hl7: `MSH|^~ &|`, a space as escape character (the test
///   data README calls it a malformed case).
fn expected_rejections(file: &str) -> BTreeMap<&'static str, usize> {
    let list: &[(&str, usize)] = match file {
        "hapi-hl7v2/messages.txt" => &[("UnsupportedVersion", 8), ("InvalidEncodingCharacters", 1)],
        "linuxforhealth-hl7v2-fhir-converter/sample_unix.hl7"
        | "linuxforhealth-hl7v2-fhir-converter/sample_win.hl7"
        | "npm-hl7-standard-1.0.4/examples-input.hl7" => &[("InvalidEncodingCharacters", 1)],
        _ => &[],
    };
    list.iter().copied().collect()
}

/// MSH-9 and MSH-12 by plain splitting of the first line on the byte after `MSH`, for
/// messages the parser refuses.
fn naive_type_and_version(message: &[u8]) -> (String, String) {
    let line = message.split(|&b| b == b'\r' || b == b'\n').next().unwrap();
    let fields: Vec<&[u8]> = line.split(|&b| b == line[3]).collect();
    let text =
        |i: usize| String::from_utf8_lossy(fields.get(i).copied().unwrap_or_default()).into_owned();
    (text(8), text(11))
}

fn joined(set: &std::collections::BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(";")
}

#[test]
fn every_sample_file_parses_with_the_type_and_version_in_index() {
    let dir = data_dir();
    let rows: Vec<Row> = index()
        .into_iter()
        .filter(|r| !r.file.contains("BadInputs"))
        .collect();
    assert_eq!(rows.len(), 163, "good files listed in INDEX.tsv");
    let mut parsed = 0;
    let mut failures = Vec::new();
    for row in &rows {
        let bytes = std::fs::read(dir.join(&row.file)).unwrap();
        let messages = split_messages(&bytes);
        if messages.len() != row.messages {
            failures.push(format!(
                "{}: {} messages, INDEX says {}",
                row.file,
                messages.len(),
                row.messages
            ));
            continue;
        }
        let mut types = std::collections::BTreeSet::new();
        let mut versions = std::collections::BTreeSet::new();
        let mut rejected: BTreeMap<&str, usize> = BTreeMap::new();
        let mut segments = 0;
        for m in &messages {
            match parse(m) {
                Ok(msg) => {
                    let h = msg.header();
                    types.insert(h.field(9).to_owned());
                    versions.insert(h.field(12).to_owned());
                    segments += msg.segments().len();
                    parsed += 1;
                }
                Err(e) => {
                    *rejected.entry(error_kind(&e)).or_default() += 1;
                    let (t, v) = match &e {
                        ParseError::UnsupportedVersion { header, .. } => {
                            (header.field(9).to_owned(), header.field(12).to_owned())
                        }
                        _ => naive_type_and_version(m),
                    };
                    types.insert(t);
                    versions.insert(v);
                }
            }
        }
        if rejected != expected_rejections(&row.file) {
            failures.push(format!("{}: rejections {rejected:?}", row.file));
        }
        if joined(&types) != row.types || joined(&versions) != row.versions {
            failures.push(format!(
                "{}: types {:?} versions {:?}, INDEX says {:?} {:?}",
                row.file,
                joined(&types),
                joined(&versions),
                row.types,
                row.versions
            ));
        }
        // INDEX counts non-empty lines; batch envelope lines are not in any message.
        let envelope = bytes
            .split(|&b| b == b'\r' || b == b'\n')
            .filter(|l| {
                ["FHS", "BHS", "BTS", "FTS"]
                    .iter()
                    .any(|s| l.starts_with(s.as_bytes()))
            })
            .count();
        if rejected.is_empty() && row.messages > 0 && segments + envelope != row.segments {
            failures.push(format!(
                "{}: {} segments, INDEX says {}",
                row.file,
                segments + envelope,
                row.segments
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(parsed, 186, "messages parsed");
}

#[test]
fn every_fuzzer_found_bad_input_is_an_error_without_panic() {
    let dir = data_dir().join("nhapi/BadInputs");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    assert_eq!(files.len(), 37, "files under BadInputs");
    let mut problems = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let parsed = parse(&bytes).map(|_| ());
            // The fallback NAK must be buildable and readable by our own parser (which
            // refuses the v2.2 it echoes for v2.2 input, as it should).
            if let Err(e) = &parsed {
                let nak = hl7::ack::reject(&bytes, e);
                match parse(nak.as_str().as_bytes()) {
                    Ok(ack) => assert!(matches!(ack.get("MSA-1").as_deref(), Some("AE" | "AR"))),
                    Err(ParseError::UnsupportedVersion { version, .. }) => {
                        assert_eq!(version, "2.2");
                        assert!(nak.as_str().contains("\rMSA|A"));
                    }
                    Err(other) => panic!("NAK {:?} does not parse: {other}", nak.as_str()),
                }
            }
            // Splitting must not panic either.
            split_messages(&bytes).iter().for_each(|m| drop(parse(m)));
            parsed
        }));
        match outcome {
            Err(_) => problems.push(format!("{}: panicked", path.display())),
            Ok(Ok(())) => problems.push(format!("{}: accepted", path.display())),
            Ok(Err(_)) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
