//! The MLLP TCP listener: one tokio task per connection, messages on a connection handled
//! strictly in order (the next frame is decoded only after the previous one's ACK is
//! written), an idle timeout, and a size cap.
//!
//! Framing: HL7 v2.5.1 Appendix C.4 (`0x0B message 0x1C 0x0D`), decoded by
//! [`hl7::mllp::MllpCodec`]. A frame over the cap is answered AR (ERR-3 207, via
//! [`hl7::ack::reject_oversize`]) without being stored; bytes outside frames are skipped; a
//! connection that ends inside a frame is closed and the partial frame dropped (nothing is
//! stored for it).
//!
//! Once a message is taken from the socket it is processed to the end even if the client
//! goes away (a client that disconnects before its ACK still has its message applied,
//! exactly once); shutdown stops accepting connections and reading new frames, lets the
//! messages in progress finish (up to [`SHUTDOWN_GRACE`]) and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hl7::mllp::{END_BLOCK, MllpCodec, MllpError, MllpFrame, START_BLOCK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, Encoder};

use super::MllpConfig;
use super::process::{Processor, Step};

/// How long shutdown waits for messages in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// A bound MLLP listener, ready to [`Listener::run`].
pub struct Listener {
    tcp: TcpListener,
    processor: Arc<Processor>,
    idle_timeout: Duration,
    max_message_bytes: usize,
}

impl Listener {
    /// Binds `config.listen`.
    pub async fn bind(config: &MllpConfig, processor: Arc<Processor>) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(config.listen).await?;
        Ok(Listener {
            tcp,
            processor,
            idle_timeout: config.idle_timeout,
            max_message_bytes: config.max_message_bytes,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `shutdown` turns true, then waits for the connections'
    /// messages in progress (at most [`SHUTDOWN_GRACE`]).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                _ = wait_true(&mut stop) => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let conn = Connection {
                            stream,
                            peer,
                            processor: self.processor.clone(),
                            idle_timeout: self.idle_timeout,
                            codec: MllpCodec::new(self.max_message_bytes),
                            shutdown: shutdown.clone(),
                        };
                        tasks.spawn(conn.run());
                    }
                    Err(e) => {
                        // E.g. too many open files: back off instead of spinning.
                        tracing::warn!(error = %e, "MLLP: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        drop(self.tcp);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("MLLP: connections still busy after the shutdown grace period");
        }
    }
}

/// Resolves once the value is true; never when the sender is gone without setting it.
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One client connection.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    processor: Arc<Processor>,
    idle_timeout: Duration,
    codec: MllpCodec,
    shutdown: watch::Receiver<bool>,
}

/// Why a connection ends.
#[derive(Debug)]
enum Close {
    /// The client closed between frames.
    Eof,
    /// The client closed inside a frame.
    Truncated(usize),
    /// No byte for the idle timeout.
    Idle,
    /// Server shutdown.
    Shutdown,
    /// Reading or writing failed (e.g. the client went away before its ACK).
    Io(std::io::Error),
}

impl Connection {
    async fn run(mut self) {
        let _ = self.stream.set_nodelay(true);
        tracing::debug!(peer = %self.peer, "MLLP: connection opened");
        let close = self.serve().await;
        match &close {
            Close::Eof | Close::Shutdown => {
                tracing::debug!(peer = %self.peer, reason = ?close, "MLLP: connection closed")
            }
            Close::Idle => {
                tracing::info!(peer = %self.peer, "MLLP: idle connection closed")
            }
            Close::Truncated(len) => tracing::warn!(
                peer = %self.peer,
                bytes = len,
                "MLLP: connection closed inside a frame; partial message dropped"
            ),
            Close::Io(e) => {
                tracing::info!(peer = %self.peer, error = %e, "MLLP: connection lost")
            }
        }
        let _ = self.stream.shutdown().await;
    }

    async fn serve(&mut self) -> Close {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut stop = self.shutdown.clone();
        loop {
            // Every complete frame already buffered is handled before reading more.
            match self.codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(e) = self.handle(frame).await {
                        return Close::Io(e);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(MllpError::Io(e)) => return Close::Io(e),
                Err(e) => {
                    tracing::warn!(peer = %self.peer, error = %e, "MLLP: framing error");
                    return Close::Io(std::io::Error::other(e.to_string()));
                }
            }
            let read = tokio::select! {
                biased;
                _ = wait_true(&mut stop) => return Close::Shutdown,
                r = tokio::time::timeout(self.idle_timeout, self.stream.read_buf(&mut buf)) => r,
            };
            match read {
                Err(_) => return Close::Idle,
                Ok(Err(e)) => return Close::Io(e),
                Ok(Ok(0)) => {
                    return match self.codec.decode_eof(&mut buf) {
                        Ok(Some(frame)) => match self.handle(frame).await {
                            Ok(()) => Close::Eof,
                            Err(e) => Close::Io(e),
                        },
                        Ok(None) => Close::Eof,
                        Err(MllpError::IncompleteFrame { len }) => Close::Truncated(len),
                        Err(e) => Close::Io(std::io::Error::other(e.to_string())),
                    };
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Handles one frame: processes it to the end, writing its ACKs as they come. A write
    /// error does not stop processing; it is returned afterwards and closes the connection.
    async fn handle(&mut self, frame: MllpFrame) -> std::io::Result<()> {
        let processor = self.processor.clone();
        match frame {
            MllpFrame::Oversize { limit, head } => {
                let control_id = hl7::Header::sniff(&head).map(|h| h.control_id());
                tracing::warn!(peer = %self.peer, limit, ?control_id, "MLLP: message over the size limit rejected (AR)");
                let ack = hl7::ack::reject_oversize(&head, limit);
                self.send(&ack.to_bytes()).await
            }
            MllpFrame::Message(bytes) => match processor.accept(&bytes, Some(self.peer.ip())).await
            {
                Step::Done(acks) => {
                    for ack in acks {
                        self.send(&ack).await?;
                    }
                    Ok(())
                }
                Step::Apply { commit, job } => {
                    let mut result = Ok(());
                    if let Some(commit) = commit {
                        result = self.send(&commit).await;
                    }
                    let ack = processor.apply(*job).await;
                    if let (Ok(()), Some(ack)) = (&result, ack) {
                        result = self.send(&ack).await;
                    }
                    result
                }
            },
        }
    }

    /// Frames and writes one ACK. Block bytes (0x0B, 0x1C) cannot be framed and become `?`.
    async fn send(&mut self, ack: &[u8]) -> std::io::Result<()> {
        let clean: Vec<u8> = ack
            .iter()
            .map(|&b| {
                if b == START_BLOCK || b == END_BLOCK {
                    b'?'
                } else {
                    b
                }
            })
            .collect();
        let mut out = BytesMut::with_capacity(clean.len() + 3);
        // An ACK is small; a larger one than the frame limit is still sent.
        let mut codec = MllpCodec::new(usize::MAX);
        codec
            .encode(&clean, &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }
}
