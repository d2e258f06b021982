//! The CATHEDRAL event: its binary record encodings (postcard, CBOR) and its
//! JSON form (`schemas/event.schema.json`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::format;
use crate::text::parse_uuid;

/// CBOR records (FORMAT.md §5.3).
mod cbor;
/// The canonical JSON line, read in one pass.
mod jsonline;

/// A record being decoded, by either codec (each adds its own methods).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    #[inline]
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let remaining = self.bytes.len() - self.at;
        if n > remaining {
            return Err(self.short(n, what));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    /// The error of a read of `n` bytes past the end (kept out of the
    /// decoding loops).
    #[cold]
    #[inline(never)]
    fn short(&self, n: usize, what: &str) -> String {
        format!("{what} at byte {} needs {n} bytes, {} remain", self.at, self.bytes.len() - self.at)
    }
}

/// A codec that decoded an event from `record` stopped at `at`: a record
/// holds one event and nothing after it.
#[inline]
fn end_of_record(record: &[u8], at: usize) -> Result<(), String> {
    match record.len() - at {
        0 => Ok(()),
        rest => Err(format!("{rest} bytes after the event inside its record")),
    }
}
/// Postcard records (FORMAT.md §5.2).
mod wire;

/// What happened. The order of variants is the wire discriminant order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The run was created (the first event of a run).
    RunCreated,
    /// The run began executing.
    RunStarted,
    /// The run finished successfully.
    RunCompleted,
    /// The run finished with a failure.
    RunFailed,
    /// A node was scheduled: its dependencies completed.
    NodeScheduled,
    /// A node began running.
    NodeStarted,
    /// A node finished successfully.
    NodeCompleted,
    /// A node finished with a failure.
    NodeFailed,
    /// A node will not run (a dependency failed or was skipped).
    NodeSkipped,
    /// A node called a tool.
    ToolInvoked,
    /// A tool call returned.
    ToolCompleted,
    /// A tool call failed.
    ToolFailed,
    /// A tool call ran out of time.
    ToolTimedOut,
    /// A capability was checked.
    CapabilityCheck,
    /// A policy decided something.
    PolicyDecision,
    /// A task was assigned to a worker.
    TaskAssigned,
    /// A worker accepted a task.
    TaskAccepted,
    /// A worker rejected a task.
    TaskRejected,
    /// A snapshot of the run's state was taken.
    SnapshotCreated,
    /// The run was restored from a snapshot.
    SnapshotRestored,
    /// A blob was stored; the payload is its content hash as 64 lowercase hex.
    BlobStored,
    /// The engine is alive.
    Heartbeat,
    /// An error not tied to one node's lifecycle.
    Error,
}

impl EventKind {
    /// Every kind, in discriminant order.
    pub const ALL: [EventKind; 23] = [
        EventKind::RunCreated,
        EventKind::RunStarted,
        EventKind::RunCompleted,
        EventKind::RunFailed,
        EventKind::NodeScheduled,
        EventKind::NodeStarted,
        EventKind::NodeCompleted,
        EventKind::NodeFailed,
        EventKind::NodeSkipped,
        EventKind::ToolInvoked,
        EventKind::ToolCompleted,
        EventKind::ToolFailed,
        EventKind::ToolTimedOut,
        EventKind::CapabilityCheck,
        EventKind::PolicyDecision,
        EventKind::TaskAssigned,
        EventKind::TaskAccepted,
        EventKind::TaskRejected,
        EventKind::SnapshotCreated,
        EventKind::SnapshotRestored,
        EventKind::BlobStored,
        EventKind::Heartbeat,
        EventKind::Error,
    ];

    /// The kind whose variant name is `name`, if any.
    pub fn from_name(name: &[u8]) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name().as_bytes() == name)
    }

    /// The variant name, as used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::RunCreated => "RunCreated",
            EventKind::RunStarted => "RunStarted",
            EventKind::RunCompleted => "RunCompleted",
            EventKind::RunFailed => "RunFailed",
            EventKind::NodeScheduled => "NodeScheduled",
            EventKind::NodeStarted => "NodeStarted",
            EventKind::NodeCompleted => "NodeCompleted",
            EventKind::NodeFailed => "NodeFailed",
            EventKind::NodeSkipped => "NodeSkipped",
            EventKind::ToolInvoked => "ToolInvoked",
            EventKind::ToolCompleted => "ToolCompleted",
            EventKind::ToolFailed => "ToolFailed",
            EventKind::ToolTimedOut => "ToolTimedOut",
            EventKind::CapabilityCheck => "CapabilityCheck",
            EventKind::PolicyDecision => "PolicyDecision",
            EventKind::TaskAssigned => "TaskAssigned",
            EventKind::TaskAccepted => "TaskAccepted",
            EventKind::TaskRejected => "TaskRejected",
            EventKind::SnapshotCreated => "SnapshotCreated",
            EventKind::SnapshotRestored => "SnapshotRestored",
            EventKind::BlobStored => "BlobStored",
            EventKind::Heartbeat => "Heartbeat",
            EventKind::Error => "Error",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EventKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        EventKind::from_name(s.as_bytes()).ok_or_else(|| Error::input("event kind", format!("unknown kind {s:?}")))
    }
}

/// An item holding an event, with the check of its payload hash; or the
/// error that stopped the item before it held one.
pub(crate) type PayloadChecked<T> = Result<(T, Result<(), Error>), Error>;

/// One event. Field order is wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id of this event.
    #[serde(with = "raw_uuid")]
    pub event_id: Uuid,
    /// The run it belongs to.
    #[serde(with = "raw_uuid")]
    pub run_id: Uuid,
    /// The DAG node it concerns.
    #[serde(with = "raw_uuid")]
    pub node_id: Uuid,
    /// The event that caused it, if any.
    #[serde(with = "raw_opt_uuid")]
    pub parent_event_id: Option<Uuid>,
    /// Position in the run's logical clock; never decreases along a log.
    pub logical_time: u64,
    /// What happened.
    pub kind: EventKind,
    /// Opaque payload bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// BLAKE3 of `payload`.
    #[serde(with = "raw_digest")]
    pub payload_hash: Digest,
    /// State hash before the event, if recorded.
    #[serde(with = "raw_opt_digest")]
    pub prior_state_hash: Option<Digest>,
    /// State hash after the event, if recorded.
    #[serde(with = "raw_opt_digest")]
    pub post_state_hash: Option<Digest>,
}

/// How event records are encoded in a log. Recorded in the log header's
/// version field, so a reader can never mistake one for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// postcard (log version 1).
    #[default]
    Postcard,
    /// CBOR (log version 2).
    Cbor,
}

impl Encoding {
    /// The log header version that names this encoding.
    pub fn log_version(self) -> u32 {
        match self {
            Encoding::Postcard => format::LOG_VERSION_POSTCARD,
            Encoding::Cbor => format::LOG_VERSION_CBOR,
        }
    }

    /// The encoding named by a log header version.
    pub fn from_log_version(version: u32) -> Option<Self> {
        match version {
            format::LOG_VERSION_POSTCARD => Some(Encoding::Postcard),
            format::LOG_VERSION_CBOR => Some(Encoding::Cbor),
            _ => None,
        }
    }

    /// `postcard` or `cbor`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Postcard => "postcard",
            Encoding::Cbor => "cbor",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "postcard" => Ok(Encoding::Postcard),
            "cbor" => Ok(Encoding::Cbor),
            _ => Err(Error::input("encoding", format!("expected postcard or cbor, found {s:?}"))),
        }
    }
}

impl Event {
    /// An event whose `payload_hash` is computed from `payload`.
    pub fn new(event_id: Uuid, run_id: Uuid, node_id: Uuid, logical_time: u64, kind: EventKind, payload: Vec<u8>) -> Self {
        let payload_hash = Digest::of(&payload);
        Event {
            event_id,
            run_id,
            node_id,
            parent_event_id: None,
            logical_time,
            kind,
            payload,
            payload_hash,
            prior_state_hash: None,
            post_state_hash: None,
        }
    }

    /// Checks that `payload_hash` is the BLAKE3 of `payload`.
    pub fn check_payload_hash(&self) -> Result<(), Error> {
        payload_hashed_to(self.payload_hash, Digest::of(&self.payload))
    }

    /// Each item that is `Ok` paired with [`Event::check_payload_hash`] of
    /// the event `event` finds in it, in order; errors pass through. The
    /// payloads are hashed side by side (several events per SIMD pass).
    pub(crate) fn with_payload_checks<T>(items: Vec<Result<T, Error>>, event: impl Fn(&T) -> &Event) -> Vec<PayloadChecked<T>> {
        let payloads: Vec<&[u8]> = items.iter().flatten().map(|item| event(item).payload.as_slice()).collect();
        let mut digests = Vec::with_capacity(payloads.len());
        crate::digest::hash_each(&payloads, &mut digests);
        let mut digests = digests.into_iter();
        items
            .into_iter()
            .map(|item| {
                let item = item?;
                let checked = payload_hashed_to(event(&item).payload_hash, digests.next().expect("one hash per event"));
                Ok((item, checked))
            })
            .collect()
    }

    /// The blob a `BlobStored` event names: its payload must be exactly the
    /// 64 lowercase hex characters of a content hash.
    pub fn stored_blob(&self) -> Option<Result<Digest, Error>> {
        self.as_ref().stored_blob()
    }

    /// Appends the encoded record (without its length prefix) to `out`.
    pub fn encode(&self, encoding: Encoding, out: &mut Vec<u8>) -> Result<(), Error> {
        match encoding {
            Encoding::Postcard => wire::encode(self, out),
            Encoding::Cbor => cbor::encode(&self.as_ref(), out),
        }
        Ok(())
    }

    /// Decodes one record. The record must be exactly the canonical encoding
    /// of the event it decodes to: no trailing bytes, no overlong integers.
    /// `file` and `offset` name the record in errors.
    pub fn decode(record: &[u8], encoding: Encoding, file: &str, offset: u64) -> Result<Self, Error> {
        Event::with_decoded(record, encoding, file, offset, |e| e.to_event())
    }

    /// The JSON form, one line, fields in schema order.
    pub fn to_json(&self) -> EventJson {
        EventJson {
            event_id: self.event_id.hyphenated().to_string(),
            run_id: self.run_id.hyphenated().to_string(),
            node_id: self.node_id.hyphenated().to_string(),
            parent_event_id: self.parent_event_id.map(|u| u.hyphenated().to_string()),
            logical_time: self.logical_time,
            kind: self.kind,
            payload: base64::engine::general_purpose::STANDARD.encode(&self.payload),
            payload_hash: self.payload_hash.to_hex(),
            prior_state_hash: self.prior_state_hash.map(|d| d.to_hex()),
            post_state_hash: self.post_state_hash.map(|d| d.to_hex()),
        }
    }

    /// The JSON form as one compact line (no newline).
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(512 + self.payload.len() * 4 / 3);
        self.write_json_line(&mut out);
        String::from_utf8(out).expect("every field of the JSON form is ASCII")
    }

    /// Appends the JSON form as one compact line (no newline) to `out`; see
    /// [`EventRef::write_json_line`].
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        self.as_ref().write_json_line(out);
    }

    /// Parses the JSON form strictly. The payload hash is not checked here.
    pub fn from_json(json: &EventJson) -> Result<Self, Error> {
        EventJsonRef {
            event_id: Cow::Borrowed(&json.event_id),
            run_id: Cow::Borrowed(&json.run_id),
            node_id: Cow::Borrowed(&json.node_id),
            parent_event_id: json.parent_event_id.as_deref().map(Cow::Borrowed),
            logical_time: json.logical_time,
            kind: json.kind,
            payload: Cow::Borrowed(&json.payload),
            payload_hash: Cow::Borrowed(&json.payload_hash),
            prior_state_hash: json.prior_state_hash.as_deref().map(Cow::Borrowed),
            post_state_hash: json.post_state_hash.as_deref().map(Cow::Borrowed),
        }
        .to_event()
    }

    /// The event whose canonical JSON line ([`Event::write_json_line`]) is
    /// exactly `line`; `None` for any other line.
    pub fn from_canonical_line(line: &[u8]) -> Option<Self> {
        jsonline::read_canonical(line)
    }

    /// Parses one JSON line strictly (unknown fields and duplicate keys are errors).
    pub fn from_json_line(line: &str) -> Result<Self, Error> {
        let json: EventJson = super::json::from_slice_strict(line.as_bytes(), "event")?;
        Event::from_json(&json)
    }
}

/// The rules every event of a run obeys, in log order (FORMAT.md §5.1): the
/// one checker used by the verifier, the index builder, the bundle builder
/// and the run store. Errors name the file "event"; callers relocate them
/// with the real file and line. Id uniqueness and blob existence need state
/// the caller has (the index, the blob list) and are checked there.
#[derive(Debug, Clone)]
pub struct EventRules {
    run_id: Option<Uuid>,
    last_time: u64,
    nodes: Option<std::collections::HashSet<Uuid>>,
    position: u64,
}

impl EventRules {
    /// Rules for a run whose id is `run_id` (or taken from its first event).
    pub fn new(run_id: Option<Uuid>) -> Self {
        EventRules { run_id, last_time: 0, nodes: None, position: 0 }
    }

    /// Also require every `node_id` to be nil (a run-level event) or one of `nodes`.
    pub fn with_nodes(mut self, nodes: std::collections::HashSet<Uuid>) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// Checks the next event; returns the blob it references, if any.
    pub fn check(&mut self, event: &Event) -> Result<Option<Digest>, Error> {
        let hashed = event.check_payload_hash();
        self.check_hashed(event, hashed)
    }

    /// [`EventRules::check`] for an event whose payload hash was already
    /// checked (`hashed` is that check's result), so that callers can hash
    /// many payloads in parallel and apply the order-dependent rules in order.
    pub fn check_hashed(&mut self, event: &Event, hashed: Result<(), Error>) -> Result<Option<Digest>, Error> {
        let event = event.as_ref();
        let alone = self.check_alone(&event, hashed, self.position);
        self.check_in_order(event.run_id, event.logical_time, alone)
    }

    /// The rules the event at `position` obeys whatever came before it: its
    /// payload hash (`hashed`), its node, its blob reference. Any thread may
    /// run this, for many events at once, given the position each will have;
    /// [`EventRules::check_in_order`] then applies the rest in log order.
    /// `Ok` with the blob the event references, if any, when it breaks none
    /// of these rules (most events: nothing is built for them).
    pub(crate) fn check_alone(&self, event: &EventRef<'_>, hashed: Result<(), Error>, position: u64) -> CheckedAlone {
        let in_dag = self.nodes.as_ref().is_none_or(|n| event.node_id.is_nil() || n.contains(&event.node_id));
        let blob = event.stored_blob();
        // Tested in place: moving `hashed` and `blob` (errors, for the few
        // events that break a rule) for every event costs a copy each.
        if hashed.is_ok() && in_dag {
            match blob {
                None => return Ok(None),
                Some(Ok(blob)) => return Ok(Some(blob)),
                Some(Err(_)) => {}
            }
        }
        Err(Box::new(AloneChecks::broken(event, hashed, in_dag, blob, position)))
    }

    /// The next event's rules in log order: its run id and logical time
    /// against the events before it, and the outcome of `alone`
    /// ([`EventRules::check_alone`] of this event at this position). The
    /// first rule broken, in the order FORMAT.md §5.1 lists them, is the
    /// error. Returns the blob the event references, if any.
    pub(crate) fn check_in_order(&mut self, run_id: Uuid, logical_time: u64, alone: CheckedAlone) -> Result<Option<Digest>, Error> {
        let position = self.position;
        self.position += 1;
        let (hashed, referenced) = match alone {
            Ok(referenced) => (Ok(()), Ok(referenced)),
            Err(broken) => {
                debug_assert_eq!(broken.position, position, "checked alone at another position");
                (broken.hashed, broken.referenced)
            }
        };
        hashed?;
        let run = *self.run_id.get_or_insert(run_id);
        if run_id != run {
            return Err(Error::rule("event", "run id", format!("event {position} belongs to run {run_id}, not {run}")));
        }
        if logical_time < self.last_time {
            let detail = format!("event {position} goes back in time: {logical_time} after {}", self.last_time);
            return Err(Error::rule("event", "logical time", detail));
        }
        self.last_time = logical_time;
        referenced
    }

    /// Events checked so far.
    pub fn count(&self) -> u64 {
        self.position
    }
}

/// Compares an event's `payload_hash` (`expected`) with `actual`, the
/// BLAKE3 of its payload.
pub(crate) fn payload_hashed_to(expected: Digest, actual: Digest) -> Result<(), Error> {
    if actual != expected {
        return Err(Error::HashMismatch { file: "event".into(), what: "payload hash", expected, found: actual });
    }
    Ok(())
}

/// What [`EventRules::check_alone`] found of one event: the blob it
/// references, or the rules it breaks.
pub(crate) type CheckedAlone = Result<Option<Digest>, Box<AloneChecks>>;

/// The rules checked alone of an event that breaks at least one of them.
#[derive(Debug)]
pub(crate) struct AloneChecks {
    position: u64,
    hashed: Result<(), Error>,
    /// The node and blob reference rules: the blob referenced, if any.
    referenced: Result<Option<Digest>, Error>,
}

impl AloneChecks {
    /// The errors of the event at `position`, named as the rules name them.
    #[cold]
    fn broken(event: &EventRef<'_>, hashed: Result<(), Error>, in_dag: bool, blob: Option<Result<Digest, Error>>, position: u64) -> Self {
        let hashed = hashed.map_err(|e| match e {
            Error::HashMismatch { file, what, expected, found } => {
                Error::Rule { file, rule: what, detail: format!("event {position}: expected {expected}, found {found}") }
            }
            other => other,
        });
        let referenced = if !in_dag {
            Err(Error::rule("event", "node reference", format!("event {position} names node {}, which is not in the DAG", event.node_id)))
        } else {
            blob.transpose().map_err(|e| match e {
                Error::Rule { file, rule, detail } => Error::Rule { file, rule, detail: format!("event {position}: {detail}") },
                other => other,
            })
        };
        AloneChecks { position, hashed, referenced }
    }
}

/// An event whose payload is borrowed (from a record, or from an [`Event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// See [`Event::event_id`].
    pub event_id: Uuid,
    /// See [`Event::run_id`].
    pub run_id: Uuid,
    /// See [`Event::node_id`].
    pub node_id: Uuid,
    /// See [`Event::parent_event_id`].
    pub parent_event_id: Option<Uuid>,
    /// See [`Event::logical_time`].
    pub logical_time: u64,
    /// See [`Event::kind`].
    pub kind: EventKind,
    /// See [`Event::payload`].
    pub payload: &'a [u8],
    /// See [`Event::payload_hash`].
    pub payload_hash: Digest,
    /// See [`Event::prior_state_hash`].
    pub prior_state_hash: Option<Digest>,
    /// See [`Event::post_state_hash`].
    pub post_state_hash: Option<Digest>,
}

impl<'a> EventRef<'a> {
    /// Decodes one record, its payload borrowed from it; the same checks as
    /// [`Event::decode`].
    #[inline]
    pub fn decode(record: &'a [u8], encoding: Encoding, file: &str, offset: u64) -> Result<Self, Error> {
        let mut event = EventRef::EMPTY;
        Self::decode_into(record, encoding, file, offset, &mut event)?;
        Ok(event)
    }

    /// [`EventRef::decode`] into `out`, where the caller keeps it: the
    /// fields are written in place, not moved there from the decoder (after
    /// an error, `out` holds some of them).
    #[inline]
    pub fn decode_into(record: &'a [u8], encoding: Encoding, file: &str, offset: u64, out: &mut Self) -> Result<(), Error> {
        // Both readers accept only the canonical encoding, as they read.
        let decoded = match encoding {
            Encoding::Postcard => wire::decode_into(record, out),
            Encoding::Cbor => cbor::decode_into(record, out),
        };
        decoded.map_err(|detail| Error::malformed(file, "event record", offset, detail))
    }

    /// A placeholder to decode into: nil ids, no payload.
    pub const EMPTY: EventRef<'static> = EventRef {
        event_id: Uuid::nil(),
        run_id: Uuid::nil(),
        node_id: Uuid::nil(),
        parent_event_id: None,
        logical_time: 0,
        kind: EventKind::Heartbeat,
        payload: &[],
        payload_hash: Digest([0; 32]),
        prior_state_hash: None,
        post_state_hash: None,
    };
}

impl EventRef<'_> {
    /// Appends the JSON form as one compact line (no newline) to `out`:
    /// byte-identical to serializing [`Event::to_json`] with serde_json, but
    /// written straight into a buffer the caller reuses. Every value is
    /// ASCII that JSON never escapes (ids, hex, base64, numbers, kind
    /// names), so no escaping pass is needed.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        fn uuid(out: &mut Vec<u8>, key: &[u8], id: &Uuid) {
            out.extend_from_slice(key);
            out.push(b'"');
            out.extend_from_slice(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
            out.push(b'"');
        }
        fn digest(out: &mut Vec<u8>, key: &[u8], d: Option<&Digest>) {
            out.extend_from_slice(key);
            match d {
                None => out.extend_from_slice(b"null"),
                Some(d) => {
                    out.push(b'"');
                    crate::text::push_hex(out, d.as_bytes());
                    out.push(b'"');
                }
            }
        }
        uuid(out, b"{\"event_id\":", &self.event_id);
        uuid(out, b",\"run_id\":", &self.run_id);
        uuid(out, b",\"node_id\":", &self.node_id);
        match &self.parent_event_id {
            Some(p) => uuid(out, b",\"parent_event_id\":", p),
            None => out.extend_from_slice(b",\"parent_event_id\":null"),
        }
        out.extend_from_slice(b",\"logical_time\":");
        std::io::Write::write_fmt(out, format_args!("{}", self.logical_time)).expect("writing to memory");
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(self.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"payload\":\"");
        let at = out.len();
        out.resize(at + base64::encoded_len(self.payload.len(), true).expect("payload length fits"), 0);
        let written = base64::engine::general_purpose::STANDARD.encode_slice(self.payload, &mut out[at..]).expect("room for base64");
        out.truncate(at + written);
        out.push(b'"');
        digest(out, b",\"payload_hash\":", Some(&self.payload_hash));
        digest(out, b",\"prior_state_hash\":", self.prior_state_hash.as_ref());
        digest(out, b",\"post_state_hash\":", self.post_state_hash.as_ref());
        out.push(b'}');
    }

    /// See [`Event::stored_blob`].
    pub fn stored_blob(&self) -> Option<Result<Digest, Error>> {
        (self.kind == EventKind::BlobStored).then(|| {
            std::str::from_utf8(self.payload)
                .ok()
                .and_then(|t| Digest::parse(t).ok())
                .ok_or_else(|| Error::rule("event", "blob reference", "a BlobStored payload must be a 64-hex content hash"))
        })
    }

    /// The owned event.
    pub fn to_event(self) -> Event {
        self.with_payload(self.payload.to_vec())
    }

    /// Copies this event into `event`, reusing its payload buffer.
    pub fn fill(self, event: &mut Event) {
        let mut payload = std::mem::take(&mut event.payload);
        payload.clear();
        payload.extend_from_slice(self.payload);
        *event = self.with_payload(payload);
    }

    fn with_payload(self, payload: Vec<u8>) -> Event {
        Event {
            event_id: self.event_id,
            run_id: self.run_id,
            node_id: self.node_id,
            parent_event_id: self.parent_event_id,
            logical_time: self.logical_time,
            kind: self.kind,
            payload,
            payload_hash: self.payload_hash,
            prior_state_hash: self.prior_state_hash,
            post_state_hash: self.post_state_hash,
        }
    }
}

impl Event {
    /// This event with its payload borrowed.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            event_id: self.event_id,
            run_id: self.run_id,
            node_id: self.node_id,
            parent_event_id: self.parent_event_id,
            logical_time: self.logical_time,
            kind: self.kind,
            payload: &self.payload,
            payload_hash: self.payload_hash,
            prior_state_hash: self.prior_state_hash,
            post_state_hash: self.post_state_hash,
        }
    }

    /// Calls `f` with the record decoded, its payload borrowed from the
    /// record. The same checks as [`Event::decode`].
    pub fn with_decoded<T>(
        record: &[u8],
        encoding: Encoding,
        file: &str,
        offset: u64,
        f: impl FnOnce(EventRef<'_>) -> T,
    ) -> Result<T, Error> {
        EventRef::decode(record, encoding, file, offset).map(f)
    }
}

/// The JSON form of an event (`schemas/event.schema.json`): the fields of
/// [`Event`] in the same order, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventJson {
    /// Hyphenated lowercase UUID.
    pub event_id: String,
    /// Hyphenated lowercase UUID.
    pub run_id: String,
    /// Hyphenated lowercase UUID; nil for run-level events.
    pub node_id: String,
    /// Hyphenated lowercase UUID, or null.
    pub parent_event_id: Option<String>,
    /// The run's logical clock.
    pub logical_time: u64,
    /// The variant name.
    pub kind: EventKind,
    /// Standard base64 with padding.
    pub payload: String,
    /// 64 lowercase hex characters.
    pub payload_hash: String,
    /// 64 lowercase hex characters, or null.
    pub prior_state_hash: Option<String>,
    /// 64 lowercase hex characters, or null.
    pub post_state_hash: Option<String>,
}

/// [`EventJson`] borrowing its strings from the text it was parsed from
/// (a string with an escape is copied), for readers of many lines.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventJsonRef<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    run_id: Cow<'a, str>,
    #[serde(borrow)]
    node_id: Cow<'a, str>,
    #[serde(borrow)]
    parent_event_id: Option<Cow<'a, str>>,
    logical_time: u64,
    kind: EventKind,
    #[serde(borrow)]
    payload: Cow<'a, str>,
    #[serde(borrow)]
    payload_hash: Cow<'a, str>,
    #[serde(borrow)]
    prior_state_hash: Option<Cow<'a, str>>,
    #[serde(borrow)]
    post_state_hash: Option<Cow<'a, str>>,
}

impl EventJsonRef<'_> {
    /// The event, its fields parsed strictly. The payload hash is not checked here.
    pub fn to_event(&self) -> Result<Event, Error> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(self.payload.as_bytes())
            .map_err(|e| Error::input("event payload", format!("not standard base64: {e}")))?;
        Ok(Event {
            event_id: parse_uuid("event_id", &self.event_id)?,
            run_id: parse_uuid("run_id", &self.run_id)?,
            node_id: parse_uuid("node_id", &self.node_id)?,
            parent_event_id: self.parent_event_id.as_deref().map(|s| parse_uuid("parent_event_id", s)).transpose()?,
            logical_time: self.logical_time,
            kind: self.kind,
            payload,
            payload_hash: Digest::parse(&self.payload_hash)?,
            prior_state_hash: self.prior_state_hash.as_deref().map(Digest::parse).transpose()?,
            post_state_hash: self.post_state_hash.as_deref().map(Digest::parse).transpose()?,
        })
    }
}

/// UUIDs on the wire: 16 raw bytes (a fixed-size tuple).
mod raw_uuid {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(u: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        u.as_bytes().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        <[u8; 16]>::deserialize(d).map(Uuid::from_bytes)
    }
}

mod raw_opt_uuid {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(u: &Option<Uuid>, s: S) -> Result<S::Ok, S::Error> {
        u.map(|u| *u.as_bytes()).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        Ok(<Option<[u8; 16]>>::deserialize(d)?.map(Uuid::from_bytes))
    }
}

/// Digests on the wire: 32 raw bytes (a fixed-size tuple), whatever the format.
mod raw_digest {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::digest::Digest;

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        d.0.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        <[u8; 32]>::deserialize(d).map(Digest)
    }
}

pub(crate) mod raw_opt_digest {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::digest::Digest;

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.0).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        Ok(<Option<[u8; 32]>>::deserialize(d)?.map(Digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the hand CBOR decoder accepts, ciborium reads as the same event,
    /// and that event's encoding is exactly the bytes accepted.
    fn assert_canonical_cbor(bytes: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        if let Ok(e) = Event::decode(bytes, Encoding::Cbor, "t", 0) {
            let mut reader = bytes;
            let theirs: Event = ciborium::from_reader(&mut reader).unwrap();
            proptest::prop_assert!(reader.is_empty());
            proptest::prop_assert_eq!(&theirs, &e);
            let mut again = Vec::new();
            ciborium::into_writer(&theirs, &mut again).unwrap();
            proptest::prop_assert_eq!(again.as_slice(), bytes);
        }
        Ok(())
    }

    fn sample() -> Event {
        let mut e =
            Event::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 300, EventKind::ToolCompleted, b"hello".to_vec());
        e.parent_event_id = Some(Uuid::from_u128(4));
        e.post_state_hash = Some(Digest::of(b"state"));
        e
    }

    #[test]
    fn postcard_layout_is_as_specified() {
        let e = sample();
        let mut out = Vec::new();
        e.encode(Encoding::Postcard, &mut out).unwrap();
        // 3 × 16 ids, 1 + 16 parent, varint 300 = [0xAC, 0x02], kind 10, len 5 + payload, 32 hash, 0, 1 + 32.
        assert_eq!(out.len(), 48 + 17 + 2 + 1 + 6 + 32 + 1 + 33);
        assert_eq!(&out[0..16], Uuid::from_u128(1).as_bytes());
        assert_eq!(out[48], 1);
        assert_eq!(&out[65..67], &[0xAC, 0x02]);
        assert_eq!(out[67], 10);
        assert_eq!(&out[68..74], b"\x05hello");
        assert_eq!(Event::decode(&out, Encoding::Postcard, "t", 0).unwrap(), e);
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let e = Event::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), 5, EventKind::Heartbeat, vec![]);
        let mut out = Vec::new();
        e.encode(Encoding::Postcard, &mut out).unwrap();
        // logical_time 5 encoded as [0x85, 0x00] instead of [0x05].
        let mut bad = out[..49].to_vec();
        bad.extend_from_slice(&[0x85, 0x00]);
        bad.extend_from_slice(&out[50..]);
        let err = Event::decode(&bad, Encoding::Postcard, "t", 0).unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");
    }

    #[test]
    fn cbor_round_trip_and_trailing_bytes() {
        let e = sample();
        let mut out = Vec::new();
        e.encode(Encoding::Cbor, &mut out).unwrap();
        assert_eq!(Event::decode(&out, Encoding::Cbor, "t", 0).unwrap(), e);
        out.push(0);
        assert!(Event::decode(&out, Encoding::Cbor, "t", 0).is_err());
        // A postcard reader must not accept a CBOR record.
        out.pop();
        assert!(Event::decode(&out, Encoding::Postcard, "t", 0).is_err());
    }

    /// Non-canonical spellings of a valid CBOR event are refused, each named.
    #[test]
    fn cbor_non_canonical_forms_are_rejected() {
        let mut e = sample();
        e.event_id = Uuid::from_bytes([5; 16]);
        e.logical_time = 7;
        let mut good = Vec::new();
        e.encode(Encoding::Cbor, &mut good).unwrap();
        let key = |k: &str| good.windows(k.len()).position(|w| w == k.as_bytes()).unwrap() + k.len();
        // A uuid byte 5 as a one-byte argument (0x18 0x05).
        let at = key("event_id") + 1;
        let overlong_byte = [&good[..at], &[0x18, 0x05], &good[at + 1..]].concat();
        // logical_time 7 as a two-byte argument.
        let at = key("logical_time");
        let overlong_time = [&good[..at], &[0x19, 0x00, 0x07], &good[at + 1..]].concat();
        // An indefinite-length map.
        let indefinite = [&[0xBF][..], &good[1..], &[0xFF]].concat();
        // Keys in another order (run_id's entry swapped with event_id's).
        let reordered = {
            let (a, b, c) = (1, key("event_id") + 17, key("run_id") + 17);
            [&good[..a], &good[b..c], &good[a..b], &good[c..]].concat()
        };
        for (case, bytes) in
            [("overlong byte", overlong_byte), ("overlong time", overlong_time), ("indefinite", indefinite), ("order", reordered)]
        {
            let err = Event::decode(&bytes, Encoding::Cbor, "t", 0).expect_err(case);
            assert!(err.to_string().contains("canonical") || err.to_string().contains("expected"), "{case}: {err}");
        }
    }

    #[test]
    fn json_round_trip_is_exact() {
        let e = sample();
        let line = e.to_json_line();
        assert_eq!(Event::from_json_line(&line).unwrap(), e);
        assert_eq!(line, serde_json::to_string(&e.to_json()).unwrap(), "the hand-written line is serde_json's");
        assert!(line.starts_with("{\"event_id\":\"00000000-0000-0000-0000-000000000001\""));
        assert!(line.contains("\"payload\":\"aGVsbG8=\""));
        assert!(
            Event::from_json_line(&line.replace("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-00000000000A")).is_err()
        );
        assert!(Event::from_json_line(&line.replace("{\"event_id\"", "{\"extra\":1,\"event_id\"")).is_err());
    }

    proptest::prop_compose! {
        /// Any event: every field, every kind, payloads up to 400 bytes.
        fn any_event()(
            ids in proptest::array::uniform3(proptest::num::u128::ANY),
            parent in proptest::option::of(proptest::num::u128::ANY),
            time in proptest::num::u64::ANY,
            kind in 0usize..23,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            prior in proptest::option::of(proptest::array::uniform32(proptest::num::u8::ANY)),
            post in proptest::option::of(proptest::array::uniform32(proptest::num::u8::ANY)),
        ) -> Event {
            let mut e = Event::new(Uuid::from_u128(ids[0]), Uuid::from_u128(ids[1]), Uuid::from_u128(ids[2]), time, EventKind::ALL[kind], payload);
            e.parent_event_id = parent.map(Uuid::from_u128);
            e.prior_state_hash = prior.map(Digest);
            e.post_state_hash = post.map(Digest);
            e
        }
    }

    /// What the run store accepts on its general path: a strict JSON parse,
    /// then the canonical form written back and compared.
    fn general_path(line: &[u8]) -> Option<Event> {
        let json: EventJsonRef<'_> = serde_json::from_slice(line).ok()?;
        let event = json.to_event().ok()?;
        let mut canonical = Vec::new();
        event.write_json_line(&mut canonical);
        (canonical == line).then_some(event)
    }

    #[test]
    fn canonical_line_reader_refuses_every_other_spelling() {
        let mut e = Event::new(Uuid::from_u128(0xab), Uuid::from_u128(2), Uuid::nil(), 120, EventKind::ToolInvoked, b"hello".to_vec());
        e.prior_state_hash = Some(Digest::of(b"s"));
        let line = e.to_json_line();
        assert_eq!(Event::from_canonical_line(line.as_bytes()), Some(e.clone()));
        let hash = Digest::of(b"hello").to_hex();
        let variants = [
            line.replace("000000ab", "000000AB"),                                          // uppercase id
            line.replace(&hash, &hash.to_uppercase()),                                     // uppercase hash
            line.replace("\"logical_time\":120", "\"logical_time\":0120"),                 // leading zero
            line.replace("\"logical_time\":120", "\"logical_time\":120.0"),                // a float
            line.replace("\"logical_time\":120", "\"logical_time\":1.2e2"),                // an exponent
            line.replace("\"logical_time\":120", "\"logical_time\":18446744073709551616"), // past u64
            line.replace("aGVsbG8=", "aGVsbG8"),                                           // missing padding
            line.replace("aGVsbG8=", "aGVsbG9="),                                          // non-zero trailing bits
            line.replace("aGVsbG8=", "aGVs\\u0062G8="),                                    // an escape
            line.replace("aGVsbG8=", "aGVs bG8="),                                         // a space inside
            line.replace("\"kind\":\"ToolInvoked\"", "\"kind\":\"toolinvoked\""),          // kind spelling
            line.replace(",\"post_state_hash\":null", ""),                                 // a null left out
            line.replace("{\"event_id\"", "{ \"event_id\""),                               // a space
            line.replace("\"parent_event_id\":null", "\"parent_event_id\":nul"),           // truncated null
            format!("{line}\n"),                                                           // a trailing newline
            format!("{line} "),                                                            // trailing space
            line[..line.len() - 1].to_string(),                                            // no closing brace
            line.replace("00000000-0000-0000-0000-0000000000ab", "000000000000-0000-0000-0000000000ab"), // hyphens moved
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v, &line, "variant {i} changes the line");
            assert_eq!(Event::from_canonical_line(v.as_bytes()), None, "variant {i}: {v}");
            assert_eq!(general_path(v.as_bytes()), None, "variant {i} is refused by the general path too");
        }
    }

    proptest::proptest! {
        #[test]
        fn canonical_line_reader_agrees_with_the_general_path(
            e in any_event(),
            edits in proptest::collection::vec(
                (proptest::num::usize::ANY, 0u8..3, proptest::sample::select(b"\"\\09afgAF-{}, n=+/:.eul\x80\x00".to_vec())),
                0..3,
            ),
        ) {
            let mut line = Vec::new();
            e.write_json_line(&mut line);
            proptest::prop_assert_eq!(Event::from_canonical_line(&line), Some(e.clone()));
            // Whatever is changed, inserted or removed, the one-pass reader
            // returns what the general path returns (an event, or nothing).
            for (at, op, byte) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 if at < line.len() => line[at] = byte,
                    1 => line.insert(at, byte),
                    _ if at < line.len() => { line.remove(at); }
                    _ => {}
                }
            }
            proptest::prop_assert_eq!(Event::from_canonical_line(&line), general_path(&line));
        }

        #[test]
        fn hand_codec_matches_postcard(e in any_event()) {
            let mut ours = Vec::new();
            e.encode(Encoding::Postcard, &mut ours).unwrap();
            proptest::prop_assert_eq!(&ours, &postcard::to_allocvec(&e).unwrap());
            proptest::prop_assert_eq!(Event::decode(&ours, Encoding::Postcard, "t", 0).unwrap(), e.clone());
            // The hand-written JSON line is exactly serde_json's.
            proptest::prop_assert_eq!(e.to_json_line(), serde_json::to_string(&e.to_json()).unwrap());
        }

        #[test]
        fn hand_cbor_codec_matches_ciborium(
            e in any_event(),
            flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 1..4),
        ) {
            let mut ours = Vec::new();
            e.encode(Encoding::Cbor, &mut ours).unwrap();
            let mut theirs = Vec::new();
            ciborium::into_writer(&e, &mut theirs).unwrap();
            proptest::prop_assert_eq!(&ours, &theirs);
            proptest::prop_assert_eq!(Event::decode(&ours, Encoding::Cbor, "t", 0).unwrap(), e.clone());
            // Changed bytes: whatever the hand decoder accepts is a CBOR
            // event whose canonical encoding is exactly those bytes.
            let mut changed = ours.clone();
            for (at, x) in flips {
                let at = at % changed.len();
                changed[at] ^= x;
            }
            assert_canonical_cbor(&changed)?;
        }

        #[test]
        fn hand_cbor_decoder_accepts_only_canonical_records(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            assert_canonical_cbor(&bytes)?;
        }

        #[test]
        fn hand_decoder_accepts_nothing_postcard_rejects(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(e) = Event::decode(&bytes, Encoding::Postcard, "t", 0) {
                let (theirs, rest) = postcard::take_from_bytes::<Event>(&bytes).unwrap();
                proptest::prop_assert!(rest.is_empty());
                proptest::prop_assert_eq!(theirs, e);
            }
        }
    }

    #[test]
    fn varint_edges() {
        for (time, bytes) in [
            (0u64, vec![0u8]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (u64::MAX, vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        ] {
            let e = Event::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), time, EventKind::Heartbeat, vec![]);
            let mut out = Vec::new();
            e.encode(Encoding::Postcard, &mut out).unwrap();
            assert_eq!(&out[49..49 + bytes.len()], bytes.as_slice(), "{time}");
            assert_eq!(Event::decode(&out, Encoding::Postcard, "t", 0).unwrap().logical_time, time);
        }
        // An 11th byte, or a 10th byte over 1, is out of range.
        let e = Event::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), u64::MAX, EventKind::Heartbeat, vec![]);
        let mut out = Vec::new();
        e.encode(Encoding::Postcard, &mut out).unwrap();
        out[58] = 0x02;
        assert!(Event::decode(&out, Encoding::Postcard, "t", 0).is_err());
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for (i, k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(k.name().parse::<EventKind>().unwrap(), *k);
            let bytes = postcard::to_allocvec(k).unwrap();
            assert_eq!(bytes, vec![i as u8]);
        }
    }

    /// An event that breaks any set of the rules is reported with the first
    /// of them in the order §5.1 lists them (payload hash, run id, time
    /// order, node, blob reference), whether checked in one call or alone
    /// (on any thread) and then in order.
    #[test]
    fn the_first_rule_broken_is_the_one_reported_however_checked() {
        let (run, other_run, node, stranger) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(4));
        let rules = || EventRules::new(Some(run)).with_nodes([node].into_iter().collect());
        let names = ["payload hash", "run id", "logical time", "node reference", "blob reference"];
        for broken in 0u32..32 {
            let breaks = |rule: usize| broken & (1 << rule) != 0;
            let kind = if breaks(4) { EventKind::BlobStored } else { EventKind::NodeStarted };
            let payload = if breaks(4) { b"not a hash".to_vec() } else { b"{}".to_vec() };
            let mut event = Event::new(
                Uuid::from_u128(9),
                if breaks(1) { other_run } else { run },
                if breaks(3) { stranger } else { node },
                5,
                kind,
                payload,
            );
            if breaks(0) {
                event.payload_hash = Digest::of(b"something else");
            }
            if breaks(2) {
                event.logical_time = 3;
            }
            let before = Event::new(Uuid::from_u128(8), run, node, 4, EventKind::NodeStarted, Vec::new());
            let expected = (0..5).find(|&r| breaks(r)).map(|r| names[r]);
            let rule_of = |result: Result<Option<Digest>, Error>| match result {
                Ok(_) => None,
                Err(Error::Rule { rule, .. }) => Some(names.into_iter().find(|n| *n == rule).expect("a rule")),
                Err(other) => panic!("not a rule error: {other}"),
            };
            let mut one_call = rules();
            one_call.check(&before).unwrap();
            assert_eq!(rule_of(one_call.check(&event)), expected, "rules broken: {broken:05b}");
            let mut split = rules();
            split.check(&before).unwrap();
            let alone = split.clone().check_alone(&event.as_ref(), event.check_payload_hash(), 1);
            assert_eq!(alone.is_ok(), !breaks(0) && !breaks(3) && !breaks(4), "rules broken: {broken:05b}");
            assert_eq!(rule_of(split.check_in_order(event.run_id, event.logical_time, alone)), expected, "rules broken: {broken:05b}");
        }
    }

    #[test]
    fn a_kind_is_found_by_its_exact_name_only() {
        for kind in EventKind::ALL {
            let name = kind.name();
            assert_eq!(EventKind::from_name(name.as_bytes()), Some(kind));
            assert_eq!(name.parse::<EventKind>().ok(), Some(kind));
            for other in [&name[1..], &name[..name.len() - 1], &format!("{name} "), &name.to_lowercase()] {
                assert_eq!(EventKind::from_name(other.as_bytes()), None, "{other:?}");
            }
        }
        assert_eq!(EventKind::from_name(b""), None);
    }
}
