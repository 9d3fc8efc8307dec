//! The ER7 parser and the message tree it builds.
//!
//! Shape: [`Message`] → [`Segment`]s → [`Field`]s → [`Repetition`]s → [`Component`]s →
//! subcomponents (the leaves, stored as escaped text). Positions are 1-based as in the
//! standard, with MSH-1 the field separator and MSH-2 the encoding characters.
//!
//! Steps of [`parse`] (HL7 v2.5.1 chapter 2, sections 2.5 "Message construction rules",
//! 2.5.4 "Message delimiters", 2.15.9 "MSH"):
//! 1. strip a UTF-8 byte order mark and leading line breaks; the input must start with `MSH`;
//! 2. read MSH-1 and MSH-2 from the raw bytes ([`Delimiters::from_msh`]), then MSH-18;
//! 3. transcode the whole input to UTF-8 with the MSH-18 character set (UTF-8 when empty; HL7
//!    says ASCII, of which UTF-8 is a superset), before any splitting, so that multi-byte
//!    sets whose trail bytes look like delimiters are safe;
//! 4. split segments on CR, LF or CRLF (mixed too; empty lines are skipped), check each
//!    segment ID, split fields, repetitions, components and subcomponents;
//! 5. require MSH-9 and MSH-12, and a supported version in MSH-12.
//!
//! MSH-10 (control ID) is not required here: two sample messages leave it empty. Escapes are
//! left in place until a leaf is read ([`Message::value`]).

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::error::ParseError;
use crate::escape::unescape;
use crate::header::{Header, MessageType};
use crate::location::Location;
use crate::version::Version;
use std::borrow::Cow;

/// A parsed HL7 v2 message. Build one with [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    charset: Charset,
    version: Version,
    segments: Vec<Segment>,
}

/// One segment: a 3-character ID and its fields (`field(1)` is the first after the ID; for
/// MSH, `field(1)` is the field separator and `field(2)` the encoding characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    id: String,
    fields: Vec<Field>,
}

/// One field: one or more repetitions, split on the repetition separator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    repetitions: Vec<Repetition>,
}

/// One repetition of a field: one or more components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repetition {
    components: Vec<Component>,
}

/// One component: one or more subcomponents, the leaves, as escaped ER7 text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    subcomponents: Vec<String>,
}

/// Parses one ER7 message from bytes (see the module documentation for the steps).
///
/// Errors: every [`ParseError`] variant; notably [`ParseError::UnsupportedVersion`] (answer
/// AR, ERR-3 = 203) and [`ParseError::MultipleMessages`] for files holding several messages
/// (use [`crate::split_messages`] first). Never panics, whatever the bytes.
pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let Some(start) = input.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return Err(ParseError::Empty);
    };
    let bytes = &input[start..];
    if !bytes.starts_with(b"MSH") {
        return Err(ParseError::MissingMsh);
    }
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let msh = &bytes[..line_end];
    let Some(&sep) = msh.get(3) else {
        return Err(ParseError::MissingField {
            segment: "MSH",
            field: 1,
            name: "Field Separator",
        });
    };
    let mut parts = msh[4..].split(|&b| b == sep);
    let delimiters = Delimiters::from_msh(sep, parts.next().unwrap_or_default())?;
    // parts now yields MSH-3, MSH-4, ...; MSH-18 is the 16th.
    let declared = parts.nth(15).map(|f| first_component(f, &delimiters));
    let charset = match declared.as_deref().map(str::trim) {
        None | Some("") => Charset::Utf8,
        Some(name) => Charset::from_hl7_name(name)
            .ok_or_else(|| ParseError::UnsupportedCharset(name.to_owned()))?,
    };
    let text = charset
        .decode(bytes)
        .map_err(|offset| ParseError::InvalidText {
            charset: if declared.is_some_and(|d| !d.trim().is_empty()) {
                charset.hl7_name()
            } else {
                "UTF-8".to_owned()
            },
            offset: start + offset,
        })?;
    parse_text(&text, delimiters, charset)
}

/// MSH-18.1 of the first repetition, from raw bytes (lossy: the name is ASCII when valid).
fn first_component(field: &[u8], d: &Delimiters) -> String {
    let (rep, comp) = (d.repetition() as u8, d.component() as u8);
    let end = field
        .iter()
        .position(|&b| b == rep || b == comp)
        .unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Splits transcoded text into segments and checks the header.
fn parse_text(text: &str, d: Delimiters, charset: Charset) -> Result<Message, ParseError> {
    let mut segments = Vec::new();
    for (i, line) in text
        .split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let index = i + 1;
        if !is_segment_start(line, d.field()) {
            return Err(ParseError::InvalidSegmentId {
                index,
                found: line.chars().take(16).collect(),
            });
        }
        let segment = parse_segment(line, &d);
        match (index, segment.id == "MSH") {
            (1, false) => return Err(ParseError::MissingMsh),
            (2.., true) => return Err(ParseError::MultipleMessages { index }),
            _ => segments.push(segment),
        }
    }
    let header = header_of(&segments, d, charset);
    if header.component(9, 1).is_empty() {
        return Err(ParseError::MissingField {
            segment: "MSH",
            field: 9,
            name: "Message Type",
        });
    }
    let version_id = header.version_id();
    if version_id.is_empty() {
        return Err(ParseError::MissingField {
            segment: "MSH",
            field: 12,
            name: "Version ID",
        });
    }
    match Version::parse(version_id) {
        Some(version) => Ok(Message {
            delimiters: d,
            charset,
            version,
            segments,
        }),
        None => Err(ParseError::UnsupportedVersion {
            version: version_id.to_owned(),
            header: Box::new(header),
        }),
    }
}

/// The MSH (first segment) fields as ER7 text.
fn header_of(segments: &[Segment], d: Delimiters, charset: Charset) -> Header {
    let fields = segments
        .first()
        .map(|msh| msh.fields.iter().map(|f| f.to_er7(&d)).collect())
        .unwrap_or_default();
    Header::new(d, charset, fields)
}

/// `[A-Z][A-Z0-9]{2}` followed by the end of the segment or the field separator.
fn is_segment_start(line: &str, field: char) -> bool {
    let b = line.as_bytes();
    b.len() >= 3
        && b[0].is_ascii_uppercase()
        && b[1..3]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && (b.len() == 3 || b[3] == field as u8)
}

fn parse_segment(line: &str, d: &Delimiters) -> Segment {
    let id = &line[..3];
    // Either empty or starting with the field separator (checked by is_segment_start).
    let rest = &line[3..];
    let mut fields = Vec::new();
    if let Some(rest) = rest.strip_prefix(d.field()) {
        let mut pieces = rest.split(d.field());
        if id == "MSH" {
            fields.push(Field::leaf(d.field().to_string()));
            fields.push(Field::leaf(pieces.next().unwrap_or_default().to_owned()));
        }
        fields.extend(pieces.map(|p| parse_field(p, d)));
    }
    Segment {
        id: id.to_owned(),
        fields,
    }
}

fn parse_field(text: &str, d: &Delimiters) -> Field {
    Field {
        repetitions: text
            .split(d.repetition())
            .map(|rep| Repetition {
                components: rep
                    .split(d.component())
                    .map(|comp| Component {
                        subcomponents: comp.split(d.subcomponent()).map(str::to_owned).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl Message {
    /// Same as [`parse`].
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        parse(input)
    }

    /// The delimiters read from MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set the message was decoded from (MSH-18; UTF-8 when MSH-18 is empty).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// MSH-12 "Version ID".
    pub fn version(&self) -> Version {
        self.version
    }

    /// All segments in order, MSH first; Z-segments included like any other.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment with this ID.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Every segment with this ID, in order.
    pub fn segments_named<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// The MSH fields, as used by [`crate::ack`].
    pub fn header(&self) -> Header {
        header_of(&self.segments, self.delimiters, self.charset)
    }

    /// MSH-9 "Message Type", unescaped.
    pub fn message_type(&self) -> MessageType {
        self.header().message_type()
    }

    /// MSH-10 "Message Control ID", unescaped (`""` when empty).
    pub fn control_id(&self) -> String {
        self.value(&Location::new("MSH", 10))
            .map(Cow::into_owned)
            .unwrap_or_default()
    }

    fn field_at(&self, loc: &Location) -> Option<&Field> {
        let index = loc.occurrence.checked_sub(1)?;
        self.segments
            .iter()
            .filter(|s| s.id == loc.segment)
            .nth(index)?
            .field(loc.field)
    }

    /// The unescaped leaf value at `loc`; a missing component or subcomponent number means
    /// the first. `None` when the position is not in the message, `Some("")` when it is
    /// there but empty. MSH-1 and MSH-2 are returned as they are, never unescaped.
    pub fn value(&self, loc: &Location) -> Option<Cow<'_, str>> {
        let rep = self.field_at(loc)?.repetition(loc.repetition)?;
        let leaf = rep
            .component(loc.component.unwrap_or(1))?
            .subcomponent(loc.subcomponent.unwrap_or(1))?;
        if loc.segment == "MSH" && loc.field <= 2 {
            return Some(Cow::Borrowed(leaf));
        }
        Some(unescape(leaf, &self.delimiters, self.charset))
    }

    /// Like [`Message::value`] with a location string such as `"PID-5.1"` or `"OBX[2]-5"`
    /// (see [`Location`]'s `FromStr`). A malformed location string gives `None`.
    pub fn get(&self, location: &str) -> Option<Cow<'_, str>> {
        self.value(&location.parse().ok()?)
    }

    /// The ER7 text (escapes kept, delimiters of this message) of the item `loc` stops at:
    /// a whole repetition when it has no component, a component when it has no
    /// subcomponent, else a subcomponent. `raw(&"MSH-9".parse()?)` gives e.g. `ADT^A01^ADT_A01`.
    pub fn raw(&self, loc: &Location) -> Option<String> {
        let rep = self.field_at(loc)?.repetition(loc.repetition)?;
        let d = &self.delimiters;
        match (loc.component, loc.subcomponent) {
            (None, None) => Some(rep.to_er7(d)),
            (Some(c), None) => rep.component(c).map(|c| c.to_er7(d)),
            (c, Some(s)) => rep
                .component(c.unwrap_or(1))?
                .subcomponent(s)
                .map(str::to_owned),
        }
    }

    /// Unescapes a raw leaf of this message (see [`crate::escape`]).
    pub fn unescape<'a>(&self, raw: &'a str) -> Cow<'a, str> {
        unescape(raw, &self.delimiters, self.charset)
    }

    /// The message as ER7 text, each segment ended by CR (`\r`).
    pub fn to_er7(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push_str(&s.to_er7(&self.delimiters));
            out.push('\r');
        }
        out
    }
}

impl Segment {
    /// The segment ID, e.g. `"PID"` or `"ZNT"`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Field `n` (1-based); `None` past the last field present.
    pub fn field(&self, n: usize) -> Option<&Field> {
        self.fields.get(n.checked_sub(1)?)
    }

    /// All fields present, in order (`fields()[0]` is field 1).
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The segment as ER7 text without terminator.
    pub fn to_er7(&self, d: &Delimiters) -> String {
        let mut out = self.id.clone();
        let skip = if self.id == "MSH" { 1 } else { 0 };
        for f in self.fields.iter().skip(skip) {
            out.push(d.field());
            out.push_str(&f.to_er7(d));
        }
        out
    }
}

impl Field {
    fn leaf(text: String) -> Field {
        Field {
            repetitions: vec![Repetition {
                components: vec![Component {
                    subcomponents: vec![text],
                }],
            }],
        }
    }

    /// All repetitions (at least one, possibly empty).
    pub fn repetitions(&self) -> &[Repetition] {
        &self.repetitions
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<&Repetition> {
        self.repetitions.get(n.checked_sub(1)?)
    }

    /// True when the field is empty (`||`).
    pub fn is_empty(&self) -> bool {
        self.repetitions.len() == 1 && self.repetitions[0].is_empty()
    }

    /// The field as ER7 text, all repetitions.
    pub fn to_er7(&self, d: &Delimiters) -> String {
        join(&self.repetitions, d.repetition(), |r| r.to_er7(d))
    }
}

impl Repetition {
    /// All components (at least one).
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.components.get(n.checked_sub(1)?)
    }

    /// True when every component is empty.
    pub fn is_empty(&self) -> bool {
        self.components.iter().all(Component::is_empty)
    }

    /// The repetition as ER7 text.
    pub fn to_er7(&self, d: &Delimiters) -> String {
        join(&self.components, d.component(), |c| c.to_er7(d))
    }
}

impl Component {
    /// The subcomponents as escaped ER7 text (at least one).
    pub fn subcomponents(&self) -> &[String] {
        &self.subcomponents
    }

    /// Subcomponent `n` (1-based), escaped ER7 text.
    pub fn subcomponent(&self, n: usize) -> Option<&str> {
        self.subcomponents
            .get(n.checked_sub(1)?)
            .map(String::as_str)
    }

    /// True when every subcomponent is empty.
    pub fn is_empty(&self) -> bool {
        self.subcomponents.iter().all(String::is_empty)
    }

    /// The component as ER7 text.
    pub fn to_er7(&self, d: &Delimiters) -> String {
        self.subcomponents.join(&d.subcomponent().to_string())
    }
}

fn join<T>(items: &[T], sep: char, f: impl Fn(&T) -> String) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(&f(item));
    }
    out
}
