//! Fleet messages on the wire: JSON, signed with HMAC-SHA256 when the fleet
//! has a secret, and checked and bounded before anything reads them.
//!
//! A signed message is the message's JSON with one more member at the end,
//! `"sig"`, the lowercase hex HMAC-SHA256 of the JSON without it:
//! `{"op":"ban",…,"at":1700000000000,"sig":"9f86d0…"}`. The receiver checks
//! the exact bytes it got (the member stripped), before parsing them, so
//! nothing depends on how JSON is re-encoded. The same text is stored in
//! the resync hash, so the resync set is signed too.

use std::{borrow::Cow, fmt, path::Path};

use ring::hmac;

use super::Message;

/// Longest message accepted, in bytes; ours are a few hundred.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest reason kept from a received message, in bytes.
pub const MAX_REASON_BYTES: usize = 200;
/// Longest node name kept from a received message, in bytes.
pub const MAX_NODE_BYTES: usize = 64;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The member a signature adds: `,"sig":"` + 64 hex digits + `"`.
const SIG_OPEN: &str = ",\"sig\":\"";
const SIG_HEX_LEN: usize = 64;
/// What a signed message ends with after its last ordinary member.
const SIG_SUFFIX_LEN: usize = SIG_OPEN.len() + SIG_HEX_LEN + "\"}".len();

/// The fleet's shared secret.
pub struct Secret(hmac::Key);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why the secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("fleet.secret_file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "fleet.secret_file {path}: the secret is {len} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `head -c 32 /dev/urandom | base64`)"
    )]
    TooShort { path: String, len: usize },
}

impl Secret {
    /// A secret from its bytes.
    pub fn new(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads the secret from `path`: the whole file, without trailing white
    /// space (a final newline), at least [`MIN_SECRET_BYTES`] long.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                path: shown,
                len: end,
            });
        }
        Ok(Self::new(&bytes[..end]))
    }

    pub(super) fn tag(&self, body: &[u8]) -> String {
        data_encoding::HEXLOWER.encode(hmac::sign(&self.0, body).as_ref())
    }

    pub(super) fn verify(&self, body: &[u8], hex: &str) -> bool {
        data_encoding::HEXLOWER
            .decode(hex.as_bytes())
            .is_ok_and(|tag| hmac::verify(&self.0, body, &tag).is_ok())
    }
}

/// Why a received message was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// Longer than [`MAX_MESSAGE_BYTES`].
    Oversized,
    /// This node has a secret and the message, well-formed otherwise,
    /// carries no signature.
    Unsigned,
    /// The signature does not match: forged, altered, or another secret.
    BadSignature,
    /// Not a fleet message: not UTF-8, not JSON, missing members, a target
    /// that is not an address.
    Malformed,
    /// The ban manager refused it (allowlist, widest prefix, length).
    Refused,
}

impl Rejected {
    /// Every reason, for metrics.
    pub const ALL: [Self; 5] = [
        Self::Oversized,
        Self::Unsigned,
        Self::BadSignature,
        Self::Malformed,
        Self::Refused,
    ];

    /// The `reason` label of `spamwall_fleet_rejected_total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Malformed => "malformed",
            Self::Refused => "refused",
        }
    }
}

/// The text published for `message`: its JSON, signed when there is a
/// secret.
pub fn encode(message: &Message, secret: Option<&Secret>) -> String {
    // A struct of strings and integers always serializes.
    let json = serde_json::to_string(message).unwrap_or_default();
    match secret {
        None => json,
        Some(secret) => {
            let tag = secret.tag(json.as_bytes());
            let mut signed = json;
            signed.pop(); // the closing brace
            signed.push_str(SIG_OPEN);
            signed.push_str(&tag);
            signed.push_str("\"}");
            signed
        }
    }
}

/// Checks and reads a received message. With a secret, only a message
/// signed with it is read; without one, any well-formed message is. The
/// reason and node are cleaned (control characters removed) and cut to
/// [`MAX_REASON_BYTES`] and [`MAX_NODE_BYTES`].
pub fn decode(payload: &[u8], secret: Option<&Secret>) -> Result<Message, Rejected> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Rejected::Oversized);
    }
    let text = std::str::from_utf8(payload).map_err(|_| Rejected::Malformed)?;
    let body: Cow<'_, str> = match secret {
        None => Cow::Borrowed(text),
        Some(secret) => {
            let Some((body, hex)) = split_signature(text) else {
                // Told apart for the operator: a node without the secret,
                // or noise.
                return Err(if serde_json::from_str::<Message>(text).is_ok() {
                    Rejected::Unsigned
                } else {
                    Rejected::Malformed
                });
            };
            if !secret.verify(body.as_bytes(), hex) {
                return Err(Rejected::BadSignature);
            }
            Cow::Owned(body)
        }
    };
    let mut message: Message = serde_json::from_str(&body).map_err(|_| Rejected::Malformed)?;
    message.reason = clean(&message.reason, MAX_REASON_BYTES);
    message.node = clean(&message.node, MAX_NODE_BYTES);
    Ok(message)
}

/// The signed body (the JSON without the `sig` member) and the signature.
fn split_signature(text: &str) -> Option<(String, &str)> {
    let start = text.len().checked_sub(SIG_SUFFIX_LEN)?;
    let suffix = text.get(start..)?;
    let hex = suffix.strip_prefix(SIG_OPEN)?.strip_suffix("\"}")?;
    let mut body = text.get(..start)?.to_owned();
    body.push('}');
    Some((body, hex))
}

/// `text` without control characters, cut at a character boundary to at
/// most `max` bytes.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bans::Source, fleet::Op};

    fn message() -> Message {
        Message {
            op: Op::Ban,
            target: "192.0.2.7".into(),
            expires_at: Some(1_800_000_000),
            source: Source::Policy,
            reason: "score 12".into(),
            node: "mx1".into(),
            id: "mx1-1-0".into(),
            at: 1_700_000_000_000,
            ports: None,
        }
    }

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_signed_message_is_json_with_a_sig_member_and_verifies() {
        let text = encode(&message(), Some(&secret()));
        let json: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(json["sig"].as_str().map(str::len), Some(64));
        assert_eq!(decode(text.as_bytes(), Some(&secret())), Ok(message()));
        // A node without a secret reads it too (the member is ignored).
        assert_eq!(decode(text.as_bytes(), None), Ok(message()));
    }

    #[test]
    fn unsigned_forged_and_altered_messages_are_rejected() {
        let plain = encode(&message(), None);
        assert_eq!(
            decode(plain.as_bytes(), Some(&secret())),
            Err(Rejected::Unsigned)
        );
        let other = Secret::new(b"another secret of enough length!");
        let forged = encode(&message(), Some(&other));
        assert_eq!(
            decode(forged.as_bytes(), Some(&secret())),
            Err(Rejected::BadSignature)
        );
        let signed = encode(&message(), Some(&secret()));
        let altered = signed.replace("192.0.2.7", "128.0.0.0/1");
        assert_eq!(
            decode(altered.as_bytes(), Some(&secret())),
            Err(Rejected::BadSignature)
        );
        let not_hex = format!("{}g\"}}", &signed[..signed.len() - 3]);
        assert_eq!(
            decode(not_hex.as_bytes(), Some(&secret())),
            Err(Rejected::BadSignature)
        );
        // A signature member that is not the last one is no signature.
        let moved = signed.replacen("{\"op\"", "{\"x\":1,\"op\"", 1);
        assert_eq!(
            decode(moved.as_bytes(), Some(&secret())),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn a_message_s_ports_are_read_or_refused_whole() {
        let with = |ports: &str| {
            let mut json = serde_json::to_string(&message()).expect("json");
            json.truncate(json.len() - 1);
            json + ",\"ports\":" + ports + "}"
        };
        let read = decode(with("[465,587]").as_bytes(), None).expect("read");
        assert_eq!(read.ports, Some(vec![465, 587]));
        let all = decode(with("[]").as_bytes(), None).expect("read");
        assert_eq!(all.ports, Some(Vec::new()), "empty: all traffic");
        for bad in ["[70000]", "[-1]", "[\"25\"]", "25", "{}"] {
            assert_eq!(
                decode(with(bad).as_bytes(), None),
                Err(Rejected::Malformed),
                "{bad}"
            );
        }
        // A sender that predates ports: the receiver's xdp.ports.
        let old = serde_json::to_string(&message()).expect("json");
        assert_eq!(decode(old.as_bytes(), None).expect("read").ports, None);
    }

    #[test]
    fn oversized_and_malformed_payloads_are_rejected_without_panic() {
        let huge = vec![b'{'; MAX_MESSAGE_BYTES + 1];
        assert_eq!(decode(&huge, None), Err(Rejected::Oversized));
        for payload in [
            &b""[..],
            b"{",
            b"null",
            b"{\"op\":\"ban\"}",
            b"\xff\xfe",
            b"{\"op\":\"nuke\",\"target\":\"x\",\"expires_at\":null,\"source\":\"cli\",\"reason\":\"\",\"node\":\"n\",\"id\":\"i\"}",
        ] {
            assert_eq!(decode(payload, None), Err(Rejected::Malformed), "{payload:?}");
            assert_eq!(
                decode(payload, Some(&secret())),
                Err(Rejected::Malformed),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn reasons_and_node_names_are_cleaned_and_cut() {
        let mut long = message();
        long.reason = format!("a\u{1b}[31mred\r\n{}", "é".repeat(300));
        long.node = "x".repeat(500);
        let text = encode(&long, Some(&secret()));
        let got = decode(text.as_bytes(), Some(&secret())).expect("decodes");
        assert!(got.reason.starts_with("a[31mred"), "{:?}", got.reason);
        assert!(got.reason.len() <= MAX_REASON_BYTES, "{}", got.reason.len());
        assert!(!got.reason.chars().any(char::is_control));
        assert_eq!(got.node.len(), MAX_NODE_BYTES);
    }

    #[test]
    fn secrets_come_from_a_file_without_the_final_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("write");
        let from_file = Secret::load(&path).expect("loads");
        let text = encode(&message(), Some(&secret()));
        assert!(decode(text.as_bytes(), Some(&from_file)).is_ok());
        std::fs::write(&path, "short\n").expect("write");
        let error = Secret::load(&path).expect_err("too short").to_string();
        assert!(error.contains("5 bytes") && error.contains("16"), "{error}");
        let error = Secret::load(&dir.path().join("missing"))
            .expect_err("missing")
            .to_string();
        assert!(error.contains("missing"), "{error}");
    }
}
