//! Operating the HL7 v2 side: `mediflow hl7 messages`, `mediflow hl7 reprocess ID` and
//! `mediflow hl7 send FILE… --to host:port`, and the JSON form of a stored message used by
//! `GET /fhir/$hl7-messages`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{AckSummary, ClientError, MllpClient, to_cr};
use super::mapping;
use super::process::Processor;
use crate::auth::audit::Auditor;
use crate::clock;
use crate::server::{self, StartResult};
use crate::storage::hl7_messages::{Hl7ListQuery, Hl7MessageRecord, Hl7MessageSummary, Hl7Status};

/// Default and largest page size of listings.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size of listings.
pub const MAX_COUNT: usize = 1000;

/// `mediflow hl7 …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Hl7Command {
    /// List stored HL7 v2 messages, newest first.
    Messages {
        /// Database: sqlite://PATH or postgres://…
        #[arg(
            long,
            env = "MEDIFLOW_DATABASE_URL",
            default_value = "sqlite://mediflow-data/mediflow.db"
        )]
        database_url: String,
        /// Only messages with this status: received, processed or error.
        #[arg(long)]
        status: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = DEFAULT_COUNT)]
        count: usize,
        /// Print JSON (one object per line) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Process a stored message again (after a fix), recording its new status and ACK.
    Reprocess {
        /// The message id (first column of `mediflow hl7 messages`).
        id: i64,
        /// Database: sqlite://PATH or postgres://…
        #[arg(
            long,
            env = "MEDIFLOW_DATABASE_URL",
            default_value = "sqlite://mediflow-data/mediflow.db"
        )]
        database_url: String,
        /// Also reprocess a message that was processed successfully (applies it again).
        #[arg(long)]
        force: bool,
        /// Do not create patients the message refers to (as `serve --hl7-no-auto-create`).
        #[arg(long)]
        hl7_no_auto_create: bool,
    },
    /// Send HL7 v2 files over MLLP and print each acknowledgment.
    Send {
        /// Files holding one or more messages (FHS/BHS batches are unwrapped).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The receiver, host:port.
        #[arg(long, default_value = super::DEFAULT_LISTEN)]
        to: String,
        /// Seconds to wait for each acknowledgment.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Send segment terminators as they are in the files (default: CR, as HL7 requires).
        #[arg(long)]
        keep_line_endings: bool,
    },
}

/// Runs a `mediflow hl7` subcommand. `Ok(false)` means it ran but something failed (a
/// missing acknowledgment, a reprocessed message still in error): exit non-zero.
pub async fn run(command: Hl7Command) -> StartResult<bool> {
    match command {
        Hl7Command::Messages {
            database_url,
            status,
            count,
            json,
        } => {
            let status = status.map(|s| s.parse::<Hl7Status>()).transpose()?;
            let store = crate::storage::connect(&database_url).await?;
            let rows = store
                .hl7_list(&Hl7ListQuery {
                    status,
                    count: count.clamp(1, MAX_COUNT),
                    before: None,
                })
                .await?;
            if json {
                for row in &rows {
                    println!("{}", summary_json(row));
                }
            } else {
                println!(
                    "{:>6}  {:<27}  {:<24}  {:<20}  {:<16}  {:<9}  reason",
                    "id", "received", "sender (MSH-3^MSH-4)", "control id", "type", "status"
                );
                for r in &rows {
                    println!(
                        "{:>6}  {:<27}  {:<24}  {:<20}  {:<16}  {:<9}  {}",
                        r.id,
                        clock::format_instant(r.received_at),
                        sender(r),
                        r.control_id.as_deref().unwrap_or(""),
                        r.message_type,
                        r.status,
                        r.reason.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(true)
        }
        Hl7Command::Reprocess {
            id,
            database_url,
            force,
            hl7_no_auto_create,
        } => {
            let ctx = server::context(&database_url, "http://localhost/fhir".to_string()).await?;
            let (auditor, audit_task) = Auditor::start(ctx.store.clone());
            let processor =
                Processor::new(ctx, mapping::config(!hl7_no_auto_create)).with_auditor(auditor);
            let done = processor.reprocess(id, force).await;
            // The processor holds the only auditor: dropping it lets the writer finish.
            drop(processor);
            let _ = audit_task.await;
            let done = done?;
            println!("message {id}: {}", done.status);
            if let Some(reason) = &done.reason {
                println!("reason: {reason}");
            }
            println!("ACK:\n{}", done.ack.replace('\r', "\n").trim_end());
            Ok(done.status == Hl7Status::Processed)
        }
        Hl7Command::Send {
            files,
            to,
            timeout_secs,
            keep_line_endings,
        } => {
            send_files(
                &files,
                &to,
                Duration::from_secs(timeout_secs),
                keep_line_endings,
            )
            .await
        }
    }
}

/// Sends every message of `files` over one connection, printing each ACK's MSA-1, MSA-2 and
/// ERR segments. Returns `Ok(false)` when a message did not get an acknowledgment it asked
/// for. In enhanced mode (MSH-15/16 valued) the commit ACK and the application ACK are
/// awaited per MSH-15 and MSH-16 (see `expected_acks`); ACK messages expect no answer.
pub async fn send_files(
    files: &[PathBuf],
    to: &str,
    timeout: Duration,
    keep_line_endings: bool,
) -> StartResult<bool> {
    let mut client = MllpClient::connect(to, timeout).await?;
    let mut all_acked = true;
    let mut sent = 0usize;
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let messages = hl7::split_messages(&bytes);
        if messages.is_empty() {
            eprintln!("{}: no HL7 message (no MSH segment)", file.display());
            all_acked = false;
            continue;
        }
        for (i, message) in messages.iter().enumerate() {
            let body = if keep_line_endings {
                message.to_vec()
            } else {
                to_cr(message)
            };
            let mut body = body;
            if !body.ends_with(b"\r") && !body.ends_with(b"\n") {
                body.push(b'\r');
            }
            let label = format!("{}#{}", file.display(), i + 1);
            let control_id = hl7::Header::sniff(&body)
                .map(|h| h.control_id())
                .unwrap_or_default();
            sent += 1;
            let header = hl7::Header::sniff(&body).unwrap_or_else(hl7::Header::empty);
            let (commit, application) = expected_acks(&header);
            client.send(&body).await?;
            let mut acked = true;
            for (kind, expect) in [("commit ACK", commit), ("ACK", application)] {
                let wait = match expect {
                    Expect::No => continue,
                    Expect::Yes => timeout,
                    Expect::Maybe => timeout.min(MAYBE_WAIT),
                };
                match client.receive_within(wait).await {
                    Ok(ack) => {
                        print_ack(&label, &control_id, &ack);
                        // A commit error or reject ends the exchange: no application ACK.
                        if AckSummary::parse(&ack).is_some_and(|s| s.code == "CE" || s.code == "CR")
                        {
                            break;
                        }
                    }
                    Err(ClientError::Timeout(_)) if expect == Expect::Maybe => {}
                    Err(e) => {
                        println!("{label} MSH-10={control_id}: no {kind}: {e}");
                        acked = false;
                        break;
                    }
                }
            }
            if !acked {
                all_acked = false;
                // The connection may be unusable: open a new one for the next message.
                client = MllpClient::connect(to, timeout).await?;
            }
        }
    }
    eprintln!("{sent} message(s) sent to {to}");
    Ok(all_acked)
}

/// How long to wait for an acknowledgment that may or may not come (MSH-15/16 ER or SU).
const MAYBE_WAIT: Duration = Duration::from_secs(2);

/// Whether an acknowledgment is to be expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Always (AL, or original mode).
    Yes,
    /// Depending on the outcome (ER, SU).
    Maybe,
    /// Never (NE; or the message is itself an ACK).
    No,
}

/// The (commit, application) acknowledgments a message asks for: original mode (MSH-15 and
/// MSH-16 empty) one application ACK; enhanced mode per table 0155 (HL7 v2.5.1 2.9.3);
/// none for an ACK message.
fn expected_acks(h: &hl7::Header) -> (Expect, Expect) {
    if h.message_type().code == "ACK" {
        return (Expect::No, Expect::No);
    }
    let (msh15, msh16) = (h.field(15).trim(), h.field(16).trim());
    if msh15.is_empty() && msh16.is_empty() {
        return (Expect::No, Expect::Yes);
    }
    let expect = |v: &str| match v {
        "NE" => Expect::No,
        "ER" | "SU" => Expect::Maybe,
        _ => Expect::Yes,
    };
    (expect(msh15), expect(msh16))
}

fn print_ack(label: &str, control_id: &str, ack: &[u8]) {
    match AckSummary::parse(ack) {
        Some(s) => {
            println!(
                "{label} MSH-10={control_id}: MSA-1={} MSA-2={}",
                s.code, s.control_id
            );
            for e in &s.errors {
                println!("  ERR {e}");
            }
        }
        None => println!(
            "{label} MSH-10={control_id}: unreadable ACK: {}",
            String::from_utf8_lossy(ack).replace('\r', "\\r")
        ),
    }
}

fn sender(s: &Hl7MessageSummary) -> String {
    super::audit::sender(&s.sending_application, &s.sending_facility)
}

/// A stored message as JSON for admins: `id`, `received`, `sender` (`application`,
/// `facility`: MSH-3, MSH-4), `controlId` (MSH-10), `type` (MSH-9), `version` (MSH-12),
/// `status`, `reason`, `processed`.
pub fn summary_json(s: &Hl7MessageSummary) -> Value {
    let mut v = json!({
        "id": s.id,
        "received": clock::format_instant(s.received_at),
        "sender": {"application": s.sending_application, "facility": s.sending_facility},
        "controlId": s.control_id,
        "type": s.message_type,
        "version": s.version,
        "status": s.status.as_str(),
    });
    if let Some(reason) = &s.reason {
        v["reason"] = json!(reason);
    }
    if let Some(at) = s.processed_at {
        v["processed"] = json!(clock::format_instant(at));
    }
    v
}

/// A stored message in full: [`summary_json`] plus `raw` and `ack` (ER7, segments
/// separated by CR).
pub fn record_json(r: &Hl7MessageRecord) -> Value {
    let mut v = summary_json(&r.summary);
    v["raw"] = json!(r.raw);
    v["ack"] = json!(r.ack);
    v
}
