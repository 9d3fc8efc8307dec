//! MLLP framing as a `tokio_util::codec` (no sockets here: wrap a stream with
//! `Framed::new(stream, MllpCodec::default())`).
//!
//! Source: HL7 v2.5.1 Appendix C "Lower Layer Protocols", C.4 "Minimal Lower Layer Protocol":
//! a frame is `<VT 0x0B> message <FS 0x1C><CR 0x0D>`.
//!
//! Decoding rules:
//! - bytes before a start block (between frames) are skipped;
//! - a start block inside a frame drops the unfinished frame and starts a new one;
//! - a frame whose content grows past the maximum yields [`MllpFrame::Oversize`] at once
//!   (with its first bytes, to read MSH-10 for an AR), then everything up to the next start
//!   block is discarded; memory stays bounded by the maximum;
//! - at end of input, an unfinished frame is an [`MllpError::IncompleteFrame`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Start block, VT.
pub const START_BLOCK: u8 = 0x0B;
/// End block, FS (followed by [`CARRIAGE_RETURN`]).
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return ending a frame.
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// Default maximum frame content size: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// How many leading bytes of an oversize frame are kept in [`MllpFrame::Oversize`].
pub const OVERSIZE_HEAD: usize = 4096;

/// What the decoder yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MllpFrame {
    /// The content of one frame, without the block characters: one HL7 message.
    Message(Bytes),
    /// A frame longer than the maximum. Answer with AR (see
    /// [`crate::ack::reject_oversize`]); the codec then skips to the next start block.
    Oversize {
        /// The maximum that was exceeded.
        limit: usize,
        /// The first bytes of the frame (at most [`OVERSIZE_HEAD`]), for MSH-10.
        head: Bytes,
    },
}

/// Errors of the codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MllpError {
    /// Reading or writing the underlying stream failed.
    #[error("MLLP I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside an MLLP frame ({len} bytes without end block)")]
    IncompleteFrame {
        /// Bytes received since the start block.
        len: usize,
    },
    /// A message to send contains a block character, which would break the framing.
    #[error("message to send contains MLLP block byte 0x{byte:02X} at offset {offset}")]
    ForbiddenByte {
        /// The byte (0x0B or 0x1C).
        byte: u8,
        /// Its offset in the message.
        offset: usize,
    },
    /// A message to send is longer than the maximum frame size.
    #[error("message to send is {len} bytes, more than the {limit}-byte MLLP maximum")]
    TooLarge {
        /// Message length.
        len: usize,
        /// The maximum.
        limit: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a start block; other bytes are skipped.
    Idle,
    /// Inside a frame; the buffer holds its content, of which `scanned` bytes hold no end.
    InFrame { scanned: usize },
    /// After an oversize frame: skipping to the next start block.
    Discarding,
}

/// MLLP codec with a maximum frame size. `Decoder::Item` is [`MllpFrame`]; the encoder
/// frames anything that is `AsRef<[u8]>`.
#[derive(Clone, Debug)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
}

impl Default for MllpCodec {
    /// [`DEFAULT_MAX_FRAME`] (1 MiB).
    fn default() -> Self {
        MllpCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl MllpCodec {
    /// A codec accepting frames of at most `max_frame` content bytes.
    pub fn new(max_frame: usize) -> MllpCodec {
        MllpCodec {
            max_frame,
            state: State::Idle,
        }
    }

    /// The maximum frame content size.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Reports an oversize frame whose first `len` buffered bytes are content. When `ended`,
    /// the end block follows them and decoding goes on right after it; otherwise the rest of
    /// the frame is skipped up to the next start block.
    fn oversize(&mut self, buf: &mut BytesMut, len: usize, ended: bool) -> MllpFrame {
        let head = Bytes::copy_from_slice(&buf[..len.min(OVERSIZE_HEAD)]);
        if ended {
            buf.advance(len + 2);
            self.state = State::Idle;
        } else {
            buf.clear();
            self.state = State::Discarding;
        }
        MllpFrame::Oversize {
            limit: self.max_frame,
            head,
        }
    }
}

impl Decoder for MllpCodec {
    type Item = MllpFrame;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<MllpFrame>, MllpError> {
        loop {
            match self.state {
                State::Idle | State::Discarding => {
                    match buf.iter().position(|&b| b == START_BLOCK) {
                        Some(i) => {
                            buf.advance(i + 1);
                            self.state = State::InFrame { scanned: 0 };
                        }
                        None => {
                            buf.clear();
                            return Ok(None);
                        }
                    }
                }
                State::InFrame { scanned } => {
                    let mut i = scanned;
                    while i < buf.len() {
                        match buf[i] {
                            END_BLOCK if i + 1 == buf.len() => break,
                            END_BLOCK if buf[i + 1] == CARRIAGE_RETURN => {
                                if i > self.max_frame {
                                    return Ok(Some(self.oversize(buf, i, true)));
                                }
                                let content = buf.split_to(i).freeze();
                                buf.advance(2);
                                self.state = State::Idle;
                                return Ok(Some(MllpFrame::Message(content)));
                            }
                            START_BLOCK => break,
                            _ => i += 1,
                        }
                    }
                    if buf.get(i) == Some(&START_BLOCK) {
                        // A new frame starts before this one ended: drop the unfinished one.
                        buf.advance(i + 1);
                        self.state = State::InFrame { scanned: 0 };
                        continue;
                    }
                    if i > self.max_frame {
                        return Ok(Some(self.oversize(buf, i, false)));
                    }
                    self.state = State::InFrame { scanned: i };
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<MllpFrame>, MllpError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        let state = std::mem::replace(&mut self.state, State::Idle);
        let len = buf.len();
        buf.clear();
        match state {
            State::InFrame { .. } => Err(MllpError::IncompleteFrame { len }),
            State::Idle | State::Discarding => Ok(None),
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = MllpError;

    /// Writes `0x0B message 0x1C 0x0D`. Errors: [`MllpError::ForbiddenByte`] when the message
    /// holds 0x0B or 0x1C, [`MllpError::TooLarge`] past the maximum frame size.
    fn encode(&mut self, message: T, dst: &mut BytesMut) -> Result<(), MllpError> {
        let message = message.as_ref();
        if let Some(offset) = message
            .iter()
            .position(|&b| b == START_BLOCK || b == END_BLOCK)
        {
            return Err(MllpError::ForbiddenByte {
                byte: message[offset],
                offset,
            });
        }
        if message.len() > self.max_frame {
            return Err(MllpError::TooLarge {
                len: message.len(),
                limit: self.max_frame,
            });
        }
        dst.reserve(message.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(message);
        dst.put_u8(END_BLOCK);
        dst.put_u8(CARRIAGE_RETURN);
        Ok(())
    }
}
