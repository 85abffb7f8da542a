//! Offer/answer blobs for the copy-paste modes (`iroh-manual`, `ice`).
//!
//! A blob is armored text that survives chat, e-mail and terminals:
//!
//! ```text
//! -----BEGIN PEERPORT OFFER-----
//! AQEBq0x0...base64, wrapped at 64 columns...
//! -----END PEERPORT OFFER-----
//! ```
//!
//! Inside is a compact binary payload:
//!
//! ```text
//! version u8 | kind u8 | mode u8 | session id [8] | created u64 BE (unix s) | body | checksum [4]
//! iroh body: endpoint id [32] | n u8 | n x (family u8 4/6 | ip [4/16] | port u16)
//! ice body:  ufrag (u8 len | utf8) | pwd (u8 len | utf8) | cert sha256 [32] | n u8 | n x candidate (u16 len | utf8)
//! ```
//!
//! The checksum is the first four bytes of SHA-256 over everything before it.
//! [`find_and_decode`] finds the block inside surrounding text, ignores
//! indentation, quote markers (`> `), CRLF and re-wrapping, then checks
//! version, kind, mode, session and age, returning errors a person can act on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use sha2::{Digest, Sha256};

use crate::Mode;

/// Payload format version.
pub const BLOB_VERSION: u8 = 1;
/// Width of armored lines.
pub const WRAP: usize = 64;
/// Largest payload accepted (before base64), so a paste cannot exhaust memory.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sent by the side that starts (the receiver).
    Offer,
    /// The reply (from the sender).
    Answer,
}

impl Kind {
    /// "OFFER" or "ANSWER", as in the armor lines.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Offer => "OFFER",
            Kind::Answer => "ANSWER",
        }
    }
}

/// What the path needs, per mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `iroh-manual`: the endpoint id and its addresses.
    Iroh {
        /// ed25519 public key.
        endpoint_id: [u8; 32],
        /// Local and STUN-discovered addresses.
        addrs: Vec<SocketAddr>,
    },
    /// `ice`: ICE credentials, candidates and the QUIC certificate fingerprint.
    Ice {
        /// ICE username fragment.
        ufrag: String,
        /// ICE password.
        pwd: String,
        /// SHA-256 of the QUIC certificate (DER).
        fingerprint: [u8; 32],
        /// Candidates in SDP attribute form.
        candidates: Vec<String>,
    },
}

/// A decoded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Offer or answer.
    pub kind: Kind,
    /// Session this blob belongs to (the offer picks it, the answer repeats it).
    pub session: [u8; 8],
    /// Creation time, unix seconds.
    pub created: u64,
    /// Path data.
    pub body: Body,
}

/// What the decoder expects.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Offer or answer.
    pub kind: Kind,
    /// `IrohManual` or `Ice`.
    pub mode: Mode,
    /// For answers: the session of our offer.
    pub session: Option<[u8; 8]>,
    /// Current unix time.
    pub now: u64,
    /// Oldest acceptable age in seconds.
    pub max_age: u64,
}

/// Why a paste was not accepted. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// No armor found.
    #[error("no `-----BEGIN PEERPORT {0}-----` block found: paste the whole block including the BEGIN and END lines")]
    NotFound(&'static str),
    /// An answer where an offer was expected or vice versa.
    #[error(
        "this is an {found} but an {expected} is expected here: paste the other side's {expected}"
    )]
    WrongKind {
        /// Found label.
        found: &'static str,
        /// Expected label.
        expected: &'static str,
    },
    /// BEGIN without END.
    #[error("the {0} block has no END line: it was cut off; copy it again completely")]
    Unterminated(&'static str),
    /// Bad base64.
    #[error(
        "the block contains characters that do not belong to it: copy it again without changes"
    )]
    Encoding,
    /// Checksum mismatch.
    #[error("the block is damaged (checksum mismatch): copy it again without changes")]
    Checksum,
    /// Other version.
    #[error("blob format version {0} is not supported (this peerport reads version {BLOB_VERSION}): use the same peerport version on both sides")]
    Version(u8),
    /// Other mode.
    #[error("this blob is for mode `{found}` but this side runs `{expected}`: start both sides in the same mode")]
    WrongMode {
        /// Mode in the blob.
        found: String,
        /// Our mode.
        expected: String,
    },
    /// Other session.
    #[error("this answer belongs to another session (another offer): paste the answer to the offer this side printed")]
    WrongSession,
    /// Too old.
    #[error("this blob is {age} s old (limit {limit} s): create a fresh one")]
    Expired {
        /// Age.
        age: u64,
        /// Limit.
        limit: u64,
    },
    /// From the future (clock skew).
    #[error("this blob was created {0} s in the future: check both clocks")]
    Future(u64),
    /// Structurally wrong.
    #[error("the block is malformed ({0}): copy it again or update peerport")]
    Malformed(&'static str),
}

fn mode_byte(m: Mode) -> u8 {
    match m {
        Mode::Iroh => 0,
        Mode::IrohManual => 1,
        Mode::Ice => 2,
        Mode::Nostr => 3,
    }
}

fn byte_mode(b: u8) -> Option<Mode> {
    Some(match b {
        0 => Mode::Iroh,
        1 => Mode::IrohManual,
        2 => Mode::Ice,
        3 => Mode::Nostr,
        _ => return None,
    })
}

impl Blob {
    /// The mode this blob's body is for.
    pub fn mode(&self) -> Mode {
        match self.body {
            Body::Iroh { .. } => Mode::IrohManual,
            Body::Ice { .. } => Mode::Ice,
        }
    }

    /// Binary payload (with checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![
            BLOB_VERSION,
            match self.kind {
                Kind::Offer => 0,
                Kind::Answer => 1,
            },
            mode_byte(self.mode()),
        ];
        b.extend_from_slice(&self.session);
        b.extend_from_slice(&self.created.to_be_bytes());
        match &self.body {
            Body::Iroh { endpoint_id, addrs } => {
                b.extend_from_slice(endpoint_id);
                let addrs = &addrs[..addrs.len().min(255)];
                b.push(addrs.len() as u8);
                for a in addrs {
                    match a.ip() {
                        IpAddr::V4(ip) => {
                            b.push(4);
                            b.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            b.push(6);
                            b.extend_from_slice(&ip.octets());
                        }
                    }
                    b.extend_from_slice(&a.port().to_be_bytes());
                }
            }
            Body::Ice {
                ufrag,
                pwd,
                fingerprint,
                candidates,
            } => {
                for s in [ufrag, pwd] {
                    let s = &s.as_bytes()[..s.len().min(255)];
                    b.push(s.len() as u8);
                    b.extend_from_slice(s);
                }
                b.extend_from_slice(fingerprint);
                let cands = &candidates[..candidates.len().min(255)];
                b.push(cands.len() as u8);
                for c in cands {
                    let c = &c.as_bytes()[..c.len().min(1024)];
                    b.extend_from_slice(&(c.len() as u16).to_be_bytes());
                    b.extend_from_slice(c);
                }
            }
        }
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum[..4]);
        b
    }

    /// Armored text, ready to paste.
    pub fn to_armor(&self) -> String {
        let label = self.kind.label();
        let text = STANDARD_NO_PAD.encode(self.to_bytes());
        let mut out = format!("-----BEGIN PEERPORT {label}-----\n");
        for chunk in text.as_bytes().chunks(WRAP) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(&format!("-----END PEERPORT {label}-----\n"));
        out
    }

    /// Parse a binary payload (checksum verified), without semantic checks.
    pub fn from_bytes(b: &[u8]) -> Result<Blob, BlobError> {
        if b.len() > MAX_PAYLOAD {
            return Err(BlobError::Malformed("too large"));
        }
        if b.len() < 4 {
            return Err(BlobError::Malformed("too short"));
        }
        let (body, sum) = b.split_at(b.len() - 4);
        if Sha256::digest(body)[..4] != *sum {
            // a different version may use a different layout: report that first
            if let Some(&v) = body.first() {
                if v != BLOB_VERSION {
                    return Err(BlobError::Version(v));
                }
            }
            return Err(BlobError::Checksum);
        }
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != BLOB_VERSION {
            return Err(BlobError::Version(version));
        }
        let kind = match r.u8()? {
            0 => Kind::Offer,
            1 => Kind::Answer,
            _ => return Err(BlobError::Malformed("kind")),
        };
        let mode = byte_mode(r.u8()?).ok_or(BlobError::Malformed("mode"))?;
        let session: [u8; 8] = r.array()?;
        let created = u64::from_be_bytes(r.array()?);
        let body = match mode {
            Mode::IrohManual => {
                let endpoint_id: [u8; 32] = r.array()?;
                let n = r.u8()?;
                let mut addrs = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let ip = match r.u8()? {
                        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                        _ => return Err(BlobError::Malformed("address family")),
                    };
                    let port = u16::from_be_bytes(r.array()?);
                    addrs.push(SocketAddr::new(ip, port));
                }
                Body::Iroh { endpoint_id, addrs }
            }
            Mode::Ice => {
                let ufrag = r.string8()?;
                let pwd = r.string8()?;
                let fingerprint: [u8; 32] = r.array()?;
                let n = r.u8()?;
                let mut candidates = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let len = u16::from_be_bytes(r.array()?) as usize;
                    candidates.push(r.string(len)?);
                }
                Body::Ice {
                    ufrag,
                    pwd,
                    fingerprint,
                    candidates,
                }
            }
            other => {
                return Err(BlobError::WrongMode {
                    found: other.to_string(),
                    expected: "iroh-manual or ice".into(),
                })
            }
        };
        if !r.0.is_empty() {
            return Err(BlobError::Malformed("trailing bytes"));
        }
        Ok(Blob {
            kind,
            session,
            created,
            body,
        })
    }

    /// Check a decoded blob against what this side expects.
    pub fn check(&self, e: &Expect) -> Result<(), BlobError> {
        if self.kind != e.kind {
            return Err(BlobError::WrongKind {
                found: self.kind.label(),
                expected: e.kind.label(),
            });
        }
        if self.mode() != e.mode {
            return Err(BlobError::WrongMode {
                found: self.mode().to_string(),
                expected: e.mode.to_string(),
            });
        }
        if let Some(s) = e.session {
            if s != self.session {
                return Err(BlobError::WrongSession);
            }
        }
        if self.created > e.now + 120 {
            return Err(BlobError::Future(self.created - e.now));
        }
        let age = e.now.saturating_sub(self.created);
        if age > e.max_age {
            return Err(BlobError::Expired {
                age,
                limit: e.max_age,
            });
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BlobError> {
        if self.0.len() < n {
            return Err(BlobError::Malformed("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, BlobError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], BlobError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn string(&mut self, n: usize) -> Result<String, BlobError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| BlobError::Malformed("text field"))
    }
    fn string8(&mut self) -> Result<String, BlobError> {
        let n = self.u8()? as usize;
        self.string(n)
    }
}

/// Locate the first armored block of either kind in `text`. Returns the kind
/// found and its base64 content (whitespace and quote markers removed), or
/// `None` if there is no BEGIN line. `Err` if the block is unterminated.
pub fn find_block(text: &str) -> Result<Option<(Kind, String)>, BlobError> {
    let mut lines = text.lines();
    let mut kind = None;
    for line in lines.by_ref() {
        let l = line.trim().trim_start_matches(['>', ' ', '\t']);
        if l.contains("-----BEGIN PEERPORT OFFER-----") {
            kind = Some(Kind::Offer);
            break;
        }
        if l.contains("-----BEGIN PEERPORT ANSWER-----") {
            kind = Some(Kind::Answer);
            break;
        }
    }
    let Some(kind) = kind else { return Ok(None) };
    let end = format!("-----END PEERPORT {}-----", kind.label());
    let mut data = String::new();
    for line in lines {
        if line.contains(&end) {
            return Ok(Some((kind, data)));
        }
        if line.contains("-----BEGIN PEERPORT") || line.contains("-----END PEERPORT") {
            return Err(BlobError::Unterminated(kind.label()));
        }
        data.extend(
            line.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/'),
        );
        if data.len() > MAX_PAYLOAD * 2 {
            return Err(BlobError::Malformed("too large"));
        }
    }
    Err(BlobError::Unterminated(kind.label()))
}

/// Every complete armored block in `text`, in order, each decoded and
/// checked against `expect` (the session check is left to the caller when
/// `expect.session` is `None`). Also returns how many bytes of `text` were
/// consumed, so a caller reading a stream can keep the unfinished rest.
///
/// A BEGIN line always starts a new block: a block cut off before its END
/// line (a truncated paste) is reported as [`BlobError::Unterminated`] as
/// soon as the next BEGIN line arrives, and never swallows the next block.
pub fn scan_blocks(text: &str, expect: &Expect) -> (Vec<Result<Blob, BlobError>>, usize) {
    const BEGIN: &str = "-----BEGIN PEERPORT";
    const END: &str = "-----END PEERPORT";
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut rest = text;
    while let Some(begin) = rest.find(BEGIN) {
        let after_begin = &rest[begin..];
        let next_begin = after_begin[BEGIN.len()..]
            .find(BEGIN)
            .map(|i| i + BEGIN.len());
        let end_rel = after_begin.find(END);
        if let Some(nb) = next_begin {
            if end_rel.is_none_or(|e| nb < e) {
                // cut off: the next block starts before this one ended
                let kind = if after_begin[..nb].contains("BEGIN PEERPORT ANSWER") {
                    Kind::Answer
                } else {
                    Kind::Offer
                };
                // start of the line holding the next BEGIN
                let line_start = after_begin[..nb].rfind('\n').map(|i| i + 1).unwrap_or(nb);
                out.push(Err(BlobError::Unterminated(kind.label())));
                consumed += begin + line_start;
                rest = &rest[begin + line_start..];
                continue;
            }
        }
        let Some(end_rel) = end_rel else {
            break;
        };
        let Some(end_len) = end_line(&after_begin[end_rel + END.len()..]) else {
            break; // END line not complete yet
        };
        let block_len = begin + end_rel + END.len() + end_len;
        out.push(find_and_decode(&rest[begin..block_len], expect));
        consumed += block_len;
        rest = &rest[block_len..];
    }
    (out, consumed)
}

/// How much of `tail`, the text after an END line's `-----END PEERPORT`,
/// belongs to the block; `None` until that is known. The line ends its
/// block at its closing `-----` (whatever follows them on the line is
/// text of its own, but for white space up to the line's end), or at the
/// line's end when it has none (a malformed END line). So the same text
/// reads the same however its pieces arrive: text after the dashes is
/// never waited for, nor taken.
fn end_line(tail: &str) -> Option<usize> {
    let newline = tail.find('\n');
    let close = tail
        .find("-----")
        .filter(|c| newline.is_none_or(|n| *c < n));
    match (close, newline) {
        (Some(c), _) => {
            let after = c + "-----".len();
            let rest = &tail[after..];
            let blank = rest.len() - rest.trim_start_matches([' ', '\t', '\r']).len();
            if rest[blank..].starts_with('\n') {
                Some(after + blank + 1)
            } else {
                Some(after)
            }
        }
        (None, Some(n)) => Some(n + 1),
        (None, None) => None,
    }
}

/// What is wrong with pasted text that holds no complete block, once the
/// paste has gone quiet (see [`incomplete`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// A BEGIN line arrived, its END line has not.
    NoEnd,
    /// Lines of base64 without a BEGIN line: the inside of a block,
    /// copied without its first and last lines.
    Bare,
}

/// Whether the unconsumed rest of a paste (what [`scan_blocks`] left) is
/// the start of a block or a block's inside without its armor lines; `None`
/// when it is neither (empty, chat text around a block, nothing yet).
pub fn incomplete(rest: &str) -> Option<Incomplete> {
    if rest.contains("-----BEGIN PEERPORT") {
        return Some(Incomplete::NoEnd);
    }
    // a line of base64 as this side writes it (chat quoting removed): long,
    // and nothing but the base64 alphabet
    let bare = rest.lines().any(|line| {
        let l = line.trim().trim_start_matches(['>', ' ', '\t']).trim();
        l.len() >= 32
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    });
    bare.then_some(Incomplete::Bare)
}

/// Find, decode and check a blob in pasted text.
pub fn find_and_decode(text: &str, expect: &Expect) -> Result<Blob, BlobError> {
    let (kind, data) = find_block(text)?.ok_or(BlobError::NotFound(expect.kind.label()))?;
    if kind != expect.kind {
        return Err(BlobError::WrongKind {
            found: kind.label(),
            expected: expect.kind.label(),
        });
    }
    let bytes = STANDARD_NO_PAD
        .decode(data.trim_end_matches('='))
        .map_err(|_| BlobError::Encoding)?;
    let blob = Blob::from_bytes(&bytes)?;
    blob.check(expect)?;
    Ok(blob)
}

#[cfg(test)]
mod tests;
