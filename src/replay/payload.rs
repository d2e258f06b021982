//! Payload conventions (REPLAY.md §3): what replay reads from an event's
//! opaque payload, and how payloads are shown to people.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// A payload as a person should see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// No bytes.
    Empty,
    /// A JSON document.
    Json(serde_json::Value),
    /// UTF-8 text that is not JSON.
    Text(String),
    /// Anything else: only its length is shown.
    Binary(usize),
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Empty => f.write_str("(empty)"),
            Payload::Json(v) => write!(f, "{v}"),
            Payload::Text(t) => write!(f, "{t:?}"),
            Payload::Binary(n) => write!(f, "<{n} bytes of binary data>"),
        }
    }
}

/// Decodes `payload` for display: JSON if it parses as JSON, else UTF-8
/// text, else binary.
pub fn decode(payload: &[u8]) -> Payload {
    if payload.is_empty() {
        return Payload::Empty;
    }
    if let Ok(value) = serde_json::from_slice(payload) {
        return Payload::Json(value);
    }
    match std::str::from_utf8(payload) {
        Ok(text) => Payload::Text(text.to_string()),
        Err(_) => Payload::Binary(payload.len()),
    }
}

/// The `error` and `output` members of a JSON-object payload. Unknown
/// members are allowed; a member given twice makes the payload
/// non-conforming (serde refuses duplicate fields).
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default)]
    output: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn members(payload: &[u8]) -> Option<Members<'_>> {
    // Only a JSON object can carry members; skip the parse for anything else.
    let first = payload.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(payload).ok()
}

/// The output hash a `ToolCompleted` or `NodeCompleted` payload names:
/// `Ok(None)` when it names none, `Err(found)` when its `output` member is
/// not 64 lowercase hex digits.
pub fn output_hash(payload: &[u8]) -> Result<Option<Digest>, String> {
    let Some(Members { output: Some(text), .. }) = members(payload) else { return Ok(None) };
    Digest::parse(&text).map(Some).map_err(|_| text.into_owned())
}

/// The error message a failure payload carries (`NodeFailed`, `ToolFailed`,
/// `ToolTimedOut`, `RunFailed`, `Error`): the `error` member of a JSON
/// object (its text if a string, else its JSON), else the whole payload as
/// JSON or UTF-8 text, else a note of its binary length. `None` for an
/// empty payload.
pub fn error_text(payload: &[u8]) -> Option<String> {
    if let Some(Members { error: Some(error), .. }) = members(payload) {
        return Some(match error {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
    }
    match decode(payload) {
        Payload::Empty => None,
        Payload::Json(value) => Some(value.to_string()),
        Payload::Text(text) => Some(text),
        binary @ Payload::Binary(_) => Some(binary.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_member() {
        let h = Digest::of(b"x");
        assert_eq!(output_hash(format!("{{\"output\":\"{h}\",\"rows\":3}}").as_bytes()), Ok(Some(h)));
        assert_eq!(output_hash(b"{}"), Ok(None));
        assert_eq!(output_hash(b"not json"), Ok(None));
        assert_eq!(output_hash(b"[1,2]"), Ok(None));
        assert_eq!(output_hash(b"{\"output\":\"abc\"}"), Err("abc".into()));
        assert_eq!(output_hash(h.to_hex().as_bytes()), Ok(None));
        assert_eq!(output_hash(format!("{{\"output\":\"{}\"}}", h.to_hex().to_uppercase()).as_bytes()), Err(h.to_hex().to_uppercase()));
    }

    #[test]
    fn error_member_text_and_binary() {
        assert_eq!(error_text(b"{\"error\":\"exit 2\",\"code\":2}").as_deref(), Some("exit 2"));
        assert_eq!(error_text(b"{\"error\":{\"code\":2}}").as_deref(), Some("{\"code\":2}"));
        assert_eq!(error_text(b"{\"reason\":\"x\"}").as_deref(), Some("{\"reason\":\"x\"}"));
        assert_eq!(error_text(b"disk full").as_deref(), Some("disk full"));
        assert_eq!(error_text(&[0xff, 0xfe]).as_deref(), Some("<2 bytes of binary data>"));
        assert_eq!(error_text(b""), None);
    }

    #[test]
    fn decode_kinds() {
        assert_eq!(decode(b""), Payload::Empty);
        assert!(matches!(decode(b"{\"a\":1}"), Payload::Json(_)));
        assert_eq!(decode(b"plain"), Payload::Text("plain".into()));
        assert_eq!(decode(&[0xc3]), Payload::Binary(1));
    }
}
