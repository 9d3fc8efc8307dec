//! The sending side of MLLP (HL7 v2.5.1 Appendix C.4): connect, frame a message
//! `0x0B … 0x1C 0x0D`, read the acknowledgment frame. Used by `mediflow hl7 send` and by
//! `mediflow bench mllp`.

use std::time::Duration;

use bytes::BytesMut;
use hl7::mllp::{MllpCodec, MllpError, MllpFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// Largest ACK accepted by the client (ACKs are small; this only bounds memory).
const MAX_ACK_BYTES: usize = 1024 * 1024;

/// Failures of the MLLP client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("MLLP I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The message cannot be framed (it holds 0x0B or 0x1C).
    #[error("cannot frame the message: {0}")]
    Frame(#[from] MllpError),
    /// No acknowledgment within the timeout.
    #[error("no acknowledgment within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection before acknowledging.
    #[error("connection closed by the server before an acknowledgment")]
    Closed,
}

/// One MLLP connection.
pub struct MllpClient {
    stream: TcpStream,
    buf: BytesMut,
    codec: MllpCodec,
    timeout: Duration,
}

impl MllpClient {
    /// Connects to `addr` (`host:port`); `timeout` bounds the connect and each wait for an
    /// acknowledgment.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<MllpClient, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(MllpClient {
            stream,
            buf: BytesMut::with_capacity(4096),
            codec: MllpCodec::new(MAX_ACK_BYTES),
            timeout,
        })
    }

    /// Frames and sends one message.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), ClientError> {
        let mut out = BytesMut::with_capacity(message.len() + 3);
        MllpCodec::new(usize::MAX).encode(message, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Waits for the next frame (an acknowledgment) for at most the client's timeout.
    pub async fn receive(&mut self) -> Result<Vec<u8>, ClientError> {
        self.receive_within(self.timeout).await
    }

    /// Waits for the next frame for at most `timeout`.
    pub async fn receive_within(&mut self, timeout: Duration) -> Result<Vec<u8>, ClientError> {
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.codec.decode(&mut self.buf)? {
                Some(MllpFrame::Message(bytes)) => return Ok(bytes.to_vec()),
                Some(MllpFrame::Oversize { head, .. }) => return Ok(head.to_vec()),
                None => {}
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Sends `message` and waits for one acknowledgment.
    pub async fn request(&mut self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.send(message).await?;
        self.receive().await
    }
}

/// What an acknowledgment says: MSA-1, MSA-2 and its ERR segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSummary {
    /// MSA-1 (AA, AE, AR, CA, CE, CR).
    pub code: String,
    /// MSA-2: the MSH-10 of the message acknowledged.
    pub control_id: String,
    /// ERR segments as `code text: message` (ERR-3, ERR-8; ERR-1 before v2.5, MSA-3).
    pub errors: Vec<String>,
}

impl AckSummary {
    /// Reads an acknowledgment; `None` when it does not parse or has no MSA.
    pub fn parse(ack: &[u8]) -> Option<AckSummary> {
        let Ok(msg) = hl7::parse(ack) else {
            return AckSummary::parse_loosely(ack);
        };
        msg.segment("MSA")?;
        let get = |loc: &str| msg.get(loc).map(|v| v.into_owned()).unwrap_or_default();
        let mut errors = Vec::new();
        for (i, _) in msg.segments_named("ERR").enumerate() {
            let n = i + 1;
            let code = get(&format!("ERR[{n}]-3.1"));
            let text = get(&format!("ERR[{n}]-3.2"));
            let message = get(&format!("ERR[{n}]-8"));
            let legacy = get(&format!("ERR[{n}]-1.4.1"));
            let line = if !code.is_empty() {
                format!("{code} {text}: {message}")
            } else {
                format!("{legacy}: {}", get("MSA-3"))
            };
            errors.push(line.trim_end_matches(": ").to_string());
        }
        Some(AckSummary {
            code: get("MSA-1"),
            control_id: get("MSA-2"),
            errors,
        })
    }
}

impl AckSummary {
    /// MSA-1, MSA-2 and MSA-3 split by hand, for ACKs the parser refuses (e.g. MSH-12 2.1
    /// or 2.2, which an AR for an unsupported version echoes).
    fn parse_loosely(ack: &[u8]) -> Option<AckSummary> {
        let text = String::from_utf8_lossy(ack);
        let sep = text.strip_prefix("MSH")?.chars().next()?;
        let msa = text.split(['\r', '\n']).find(|l| l.starts_with("MSA"))?;
        let fields: Vec<&str> = msa.split(sep).collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("").to_string();
        let errors = match field(3) {
            t if t.is_empty() => Vec::new(),
            t => vec![t],
        };
        Some(AckSummary {
            code: field(1),
            control_id: field(2),
            errors,
        })
    }
}

/// Normalises segment terminators to CR (HL7 v2.5.1 section 2.5.2): CRLF and LF become CR.
pub fn to_cr(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                out.push(b'\r');
                i += 1;
            }
            b'\n' => out.push(b'\r'),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_become_cr() {
        assert_eq!(to_cr(b"MSH|a\r\nPID|b\nOBX|c\r"), b"MSH|a\rPID|b\rOBX|c\r");
    }

    #[test]
    fn ack_summary_reads_msa_and_err() {
        let ack = b"MSH|^~\\&|A|B|C|D|20240101||ACK^R01^ACK|9|P|2.5.1\rMSA|AE|42\rERR||PID^1^3|204^Unknown key identifier^HL70357|E||||no such patient\r";
        let s = AckSummary::parse(ack).unwrap();
        assert_eq!(s.code, "AE");
        assert_eq!(s.control_id, "42");
        assert_eq!(
            s.errors,
            vec!["204 Unknown key identifier: no such patient".to_string()]
        );
    }
}
