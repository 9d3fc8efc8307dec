//! A small, independent HL7 v2 MLLP client for the conformance tests: framing
//! `0x0B … 0x1C 0x0D` (HL7 v2.5.1 Appendix C.4), reading ACKs, and message helpers that
//! work on raw ER7 text (no dependency on the server's own `hl7` crate, so the tests check
//! the server against an independent reading of the standard).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Start block (VT).
pub const SB: u8 = 0x0B;
/// End block (FS), followed by CR.
pub const EB: u8 = 0x1C;
/// How long to wait for an ACK by default.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// One MLLP connection to the server under test.
pub struct MllpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One acknowledgment as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The ACK text (segments separated by CR).
    pub raw: String,
    /// MSA-1: AA, AE, AR, CA, CE, CR.
    pub code: String,
    /// MSA-2: the MSH-10 of the message acknowledged.
    pub control_id: String,
    /// ERR-3.1 of each ERR segment (table 0357 code), e.g. `204`.
    pub error_codes: Vec<String>,
    /// ERR-8 of each ERR segment (or MSA-3 for v2.3/2.4 ACKs).
    pub error_messages: Vec<String>,
}

impl Ack {
    /// Reads MSA and ERR from an ACK's text.
    pub fn parse(bytes: &[u8]) -> Ack {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let sep = raw.get(3..4).unwrap_or("|").to_string();
        let comp = raw.get(4..5).unwrap_or("^").to_string();
        let mut ack = Ack {
            raw: raw.clone(),
            code: String::new(),
            control_id: String::new(),
            error_codes: Vec::new(),
            error_messages: Vec::new(),
        };
        for seg in raw.split(['\r', '\n']).filter(|s| !s.is_empty()) {
            let f: Vec<&str> = seg.split(sep.as_str()).collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("").to_string();
            match f.first().copied() {
                Some("MSA") => {
                    ack.code = get(1);
                    ack.control_id = get(2);
                    if !get(3).is_empty() {
                        ack.error_messages.push(get(3));
                    }
                }
                Some("ERR") => {
                    let code = get(3).split(comp.as_str()).next().unwrap_or("").to_string();
                    if code.is_empty() {
                        // v2.3/2.4 layout: ERR-1 = SEG^seq^field^code&text&table.
                        let eld = get(1);
                        let c4 = eld.split(comp.as_str()).nth(3).unwrap_or("");
                        ack.error_codes
                            .push(c4.split('&').next().unwrap_or("").to_string());
                    } else {
                        ack.error_codes.push(code);
                    }
                    if !get(8).is_empty() {
                        ack.error_messages.push(get(8));
                    }
                }
                _ => {}
            }
        }
        ack
    }

    /// Panics with the ACK text unless MSA-1 is `code` and MSA-2 is `control_id`.
    pub fn assert(&self, code: &str, control_id: &str) -> &Ack {
        assert_eq!(
            (self.code.as_str(), self.control_id.as_str()),
            (code, control_id),
            "MSA-1/MSA-2 of ACK:\n{}",
            self.raw.replace('\r', "\n")
        );
        self
    }
}

impl MllpConn {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> MllpConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("MLLP connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        MllpConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes bytes as they are (no framing).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("MLLP write");
    }

    /// Frames and sends one message.
    pub async fn send(&mut self, message: &[u8]) {
        self.send_raw(&frame(message)).await;
    }

    /// The next frame, or `None` when the server closes the connection or nothing comes
    /// within `timeout`.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == SB)
                && let Some(end) = self.buf[start..].windows(2).position(|w| w == [EB, b'\r'])
            {
                let frame = self.buf[start + 1..start + end].to_vec();
                self.buf.drain(..start + end + 2);
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next ACK; panics when none comes within [`ACK_TIMEOUT`].
    pub async fn read_ack(&mut self) -> Ack {
        let frame = self
            .read_frame(ACK_TIMEOUT)
            .await
            .expect("an MLLP acknowledgment frame");
        Ack::parse(&frame)
    }

    /// Sends one message and reads one ACK.
    pub async fn request(&mut self, message: &[u8]) -> Ack {
        self.send(message).await;
        self.read_ack().await
    }

    /// True when the server closes the connection within `timeout` (no frame either).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// `0x0B message 0x1C 0x0D`.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(SB);
    out.extend_from_slice(message);
    out.extend_from_slice(&[EB, b'\r']);
    out
}

/// A sample file under `shared/testdata/hl7v2/`.
pub fn sample_path(rel: &str) -> PathBuf {
    crate::shared_dir().join("testdata/hl7v2").join(rel)
}

/// The bytes of a sample file under `shared/testdata/hl7v2/`.
pub fn sample(rel: &str) -> Vec<u8> {
    let path = sample_path(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The message of a one-message sample, BOM and trailing blank lines removed, segments
/// separated by CR.
pub fn sample_message(rel: &str) -> Vec<u8> {
    let bytes = sample(rel);
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = String::from_utf8_lossy(bytes);
    let segs: Vec<&str> = text
        .split(['\r', '\n'])
        .filter(|s| !s.trim().is_empty())
        .collect();
    let mut out = segs.join("\r");
    out.push('\r');
    out.into_bytes()
}

/// Field `n` of the MSH segment (MSH-1 is the separator: `msh_field(m, 10)` is MSH-10).
pub fn msh_field(message: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(message);
    let text = text.trim_start_matches('\u{feff}');
    let line = text.split(['\r', '\n']).next().unwrap_or("");
    let sep = line.get(3..4).unwrap_or("|");
    if n == 1 {
        return sep.to_string();
    }
    line.split(sep).nth(n - 1).unwrap_or("").to_string()
}

/// Field `n` (1-based) of the first `segment`, as raw ER7.
pub fn field(message: &[u8], segment: &str, n: usize) -> String {
    let text = String::from_utf8_lossy(message);
    text.split(['\r', '\n'])
        .find(|l| l.starts_with(segment))
        .and_then(|l| l.split('|').nth(n))
        .unwrap_or("")
        .to_string()
}

/// The message with MSH field `n` replaced (segments and terminators kept).
pub fn with_msh_field(message: &[u8], n: usize, value: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(message).into_owned();
    let end = text.find(['\r', '\n']).unwrap_or(text.len());
    let (line, rest) = text.split_at(end);
    let bom = line.starts_with('\u{feff}');
    let line = line.trim_start_matches('\u{feff}');
    let sep = line.get(3..4).unwrap_or("|").to_string();
    let mut fields: Vec<String> = line.split(sep.as_str()).map(str::to_string).collect();
    // fields[0] = "MSH", fields[1] = MSH-2, so MSH-n is fields[n - 1].
    while fields.len() < n {
        fields.push(String::new());
    }
    fields[n - 1] = value.to_string();
    let mut out = String::new();
    if bom {
        out.push('\u{feff}');
    }
    out.push_str(&fields.join(&sep));
    out.push_str(rest);
    out.into_bytes()
}

/// The message with a new MSH-10 (control ID).
pub fn with_control_id(message: &[u8], control_id: &str) -> Vec<u8> {
    with_msh_field(message, 10, control_id)
}

/// A control ID unique to this test run.
pub fn unique_control_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The segment terminators of `message` replaced by `terminator` (`"\r"`, `"\n"`,
/// `"\r\n"`).
pub fn with_terminator(message: &[u8], terminator: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let segs: Vec<&str> = text.split(['\r', '\n']).filter(|s| !s.is_empty()).collect();
    let mut out = segs.join(terminator);
    out.push_str(terminator);
    out.into_bytes()
}
