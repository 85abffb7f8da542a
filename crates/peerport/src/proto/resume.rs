//! Resumable TCP streams, without IO: the replay buffer, the acknowledgement
//! frames both sides send on a session's hello stream, and the reply
//! extension that hands out and answers resume tickets.
//!
//! Each direction of a TCP stream counts the bytes it took from its local
//! socket (`sent`) and the bytes it wrote to its local socket
//! (`delivered`). A side keeps what it sent until the peer acknowledges
//! delivering it ([`ReplayBuf`]); after a lost connection both sides tell
//! each other how much they delivered and replay the rest, so the local
//! sockets see every byte exactly once.
//!
//! Ack frame (either direction, on the hello stream after the reply):
//!
//! ```text
//! type u8 (1 = ack, 2 = ack and the FIN was delivered) | stream u64 BE | delivered u64 BE
//! ```
//!
//! Reply extension (after a `Reply` to a hello that asked
//! for resumption, or to a resume stream): `length u16 BE | TLV*`, the same
//! TLV layout as request headers; unknown tags are skipped.

use std::collections::VecDeque;

use bytes::Bytes;

use super::tlv::{put_tlv, tlvs, HeaderError, MAX_BODY};

/// Bytes sent towards the peer and not yet acknowledged as delivered.
#[derive(Debug)]
pub struct ReplayBuf {
    /// Stream offset of the first kept byte.
    base: u64,
    chunks: VecDeque<Bytes>,
    len: usize,
    cap: usize,
}

/// What is wrong with an acknowledgement or a resume offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The peer claims more than was ever sent: a broken or hostile peer.
    #[error("the peer acknowledged {claimed} bytes but only {sent} were sent")]
    BeyondSent {
        /// Claimed offset.
        claimed: u64,
        /// Bytes sent so far.
        sent: u64,
    },
    /// The bytes from this offset were already dropped (acknowledged).
    #[error("the peer asked for bytes from {from} again, but they were acknowledged up to {base}")]
    AlreadyAcked {
        /// Asked offset.
        from: u64,
        /// First byte still kept.
        base: u64,
    },
}

impl ReplayBuf {
    /// An empty buffer holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        ReplayBuf {
            base: 0,
            chunks: VecDeque::new(),
            len: 0,
            cap,
        }
    }

    /// Total bytes ever pushed (the stream offset of the next byte).
    pub fn sent(&self) -> u64 {
        self.base + self.len as u64
    }

    /// Bytes kept (sent, not yet acknowledged).
    pub fn unacked(&self) -> usize {
        self.len
    }

    /// How many more bytes may be pushed before the buffer is full.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.len)
    }

    /// Keep `data` (already sent or about to be).
    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// The peer delivered everything before `delivered`: drop it. Returns
    /// how many bytes were freed; an old (smaller) offset frees nothing.
    pub fn ack(&mut self, delivered: u64) -> Result<usize, ReplayError> {
        if delivered > self.sent() {
            return Err(ReplayError::BeyondSent {
                claimed: delivered,
                sent: self.sent(),
            });
        }
        let mut drop = delivered.saturating_sub(self.base) as usize;
        let freed = drop;
        while drop > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= drop {
                drop -= front.len();
                self.chunks.pop_front();
            } else {
                *front = front.slice(drop..);
                drop = 0;
            }
        }
        self.base += freed as u64;
        self.len -= freed;
        Ok(freed)
    }

    /// The bytes from stream offset `from` on, to send again after a resume
    /// (acknowledges everything before `from`).
    pub fn replay_from(&mut self, from: u64) -> Result<Vec<Bytes>, ReplayError> {
        if from < self.base {
            return Err(ReplayError::AlreadyAcked {
                from,
                base: self.base,
            });
        }
        self.ack(from)?;
        Ok(self.chunks.iter().cloned().collect())
    }
}

/// An acknowledgement: the sender of the frame wrote `delivered` bytes of
/// stream `stream` to its local socket (and, with `fin`, shut it down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Stream id within the resumable session.
    pub stream: u64,
    /// Bytes delivered to the local socket.
    pub delivered: u64,
    /// The peer's end of stream was delivered too.
    pub fin: bool,
}

/// Length of an encoded [`Ack`].
pub const ACK_LEN: usize = 17;

impl Ack {
    /// Serialize.
    pub fn encode(&self) -> [u8; ACK_LEN] {
        let mut out = [0u8; ACK_LEN];
        out[0] = if self.fin { 2 } else { 1 };
        out[1..9].copy_from_slice(&self.stream.to_be_bytes());
        out[9..17].copy_from_slice(&self.delivered.to_be_bytes());
        out
    }

    /// Parse one frame from a full [`ACK_LEN`] bytes.
    pub fn decode(b: &[u8; ACK_LEN]) -> Result<Self, HeaderError> {
        let fin = match b[0] {
            1 => false,
            2 => true,
            _ => return Err(HeaderError::Malformed),
        };
        let stream = u64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
        let delivered = u64::from_be_bytes(b[9..17].try_into().expect("8 bytes"));
        Ok(Ack {
            stream,
            delivered,
            fin,
        })
    }
}

/// A resumable session's name and the secret that resumes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Session id (not secret).
    pub id: [u8; 16],
    /// Proves the right to resume; replaced at every (re)connection.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", hex::encode(&self.id[..4]))
    }
}

impl Ticket {
    /// A fresh random ticket.
    pub fn generate() -> Self {
        Ticket {
            id: rand::random(),
            secret: rand::random(),
        }
    }

    /// The same session with a new secret.
    pub fn rotate(&self) -> Self {
        Ticket {
            id: self.id,
            secret: rand::random(),
        }
    }

    /// `id | secret`, as carried in a hello.
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[..16].copy_from_slice(&self.id);
        out[16..].copy_from_slice(&self.secret);
        out
    }

    /// Parse `id | secret`.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 48 {
            return None;
        }
        Some(Ticket {
            id: b[..16].try_into().ok()?,
            secret: b[16..].try_into().ok()?,
        })
    }

    /// Constant-time comparison of the secrets (same id assumed).
    pub fn secret_matches(&self, other: &Ticket) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.secret.iter().zip(other.secret.iter()) {
            diff |= a ^ b;
        }
        diff == 0 && self.id == other.id
    }
}

const EXT_TICKET: u8 = 1;
const EXT_RESUMED: u8 = 2;
const EXT_WINDOW: u8 = 3;
const EXT_DELIVERED: u8 = 4;
const EXT_SERVICES: u8 = 5;
const EXT_REFUSED: u8 = 6;
/// Longest refusal message a hello reply carries per want, in bytes.
const REFUSED_MESSAGE: usize = 160;

/// Reply extension: what a resume-aware sender adds after its reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyExt {
    /// Hello: the ticket that resumes this session next time.
    pub ticket: Option<Ticket>,
    /// Hello: whether the session named in the hello was resumed.
    pub resumed: Option<bool>,
    /// Hello: how long the sender keeps a lost session, in seconds.
    pub window_secs: Option<u32>,
    /// Resume stream: bytes the sender delivered, and whether the FIN too.
    pub delivered: Option<(u64, bool)>,
    /// Hello: how many of the hello's wants the sender granted (all of
    /// them; present only when the hello listed wants).
    pub services: Option<u16>,
    /// Hello: the wants the sender does not allow now (their index, and
    /// why), while it carries the others; each is `index u16 | message`
    /// in a TLV of its own, messages cut to 160 bytes, and as many as fit
    /// the header.
    pub refused: Vec<(u16, String)>,
}

impl ReplyExt {
    /// Serialize (`length u16 | TLV*`).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(t) = &self.ticket {
            put_tlv(&mut body, EXT_TICKET, &t.to_bytes());
        }
        if let Some(r) = self.resumed {
            put_tlv(&mut body, EXT_RESUMED, &[r as u8]);
        }
        if let Some(w) = self.window_secs {
            put_tlv(&mut body, EXT_WINDOW, &w.to_be_bytes());
        }
        if let Some(d) = self.delivered {
            put_tlv(&mut body, EXT_DELIVERED, &encode_delivered(d));
        }
        if let Some(n) = self.services {
            put_tlv(&mut body, EXT_SERVICES, &n.to_be_bytes());
        }
        for (index, message) in &self.refused {
            let mut v = index.to_be_bytes().to_vec();
            v.extend_from_slice(cut(message, REFUSED_MESSAGE).as_bytes());
            if body.len() + 3 + v.len() > MAX_BODY {
                break;
            }
            put_tlv(&mut body, EXT_REFUSED, &v);
        }
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Parse a body (the bytes after the length).
    pub fn decode_body(body: &[u8]) -> Result<Self, HeaderError> {
        if body.len() > MAX_BODY {
            return Err(HeaderError::TooLarge(body.len()));
        }
        let mut ext = ReplyExt::default();
        for (tag, v) in tlvs(body) {
            let v = v?;
            match tag {
                EXT_TICKET => {
                    ext.ticket = Some(Ticket::from_bytes(v).ok_or(HeaderError::Malformed)?)
                }
                EXT_RESUMED => {
                    ext.resumed = Some(match v {
                        [0] => false,
                        [1] => true,
                        _ => return Err(HeaderError::Malformed),
                    })
                }
                EXT_WINDOW => {
                    ext.window_secs = Some(u32::from_be_bytes(
                        v.try_into().map_err(|_| HeaderError::Malformed)?,
                    ))
                }
                EXT_DELIVERED => ext.delivered = Some(decode_delivered(v)?),
                EXT_SERVICES => {
                    ext.services = Some(u16::from_be_bytes(
                        v.try_into().map_err(|_| HeaderError::Malformed)?,
                    ))
                }
                EXT_REFUSED => {
                    let (index, message) =
                        v.split_first_chunk::<2>().ok_or(HeaderError::Malformed)?;
                    let message =
                        std::str::from_utf8(message).map_err(|_| HeaderError::Malformed)?;
                    ext.refused
                        .push((u16::from_be_bytes(*index), message.to_string()));
                }
                _ => {}
            }
        }
        Ok(ext)
    }
}

/// `text` cut to at most `max` bytes on a char boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `delivered u64 | fin u8`.
pub fn encode_delivered((n, fin): (u64, bool)) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8] = fin as u8;
    out
}

/// Parse `delivered u64 | fin u8`.
pub fn decode_delivered(v: &[u8]) -> Result<(u64, bool), HeaderError> {
    if v.len() != 9 || v[8] > 1 {
        return Err(HeaderError::Malformed);
    }
    Ok((
        u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
        v[8] == 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(v: Vec<Bytes>) -> Vec<u8> {
        v.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn replay_keeps_exactly_the_unacknowledged_bytes() {
        let mut r = ReplayBuf::new(100);
        r.push(Bytes::from_static(b"hello "));
        r.push(Bytes::from_static(b"world"));
        assert_eq!(r.sent(), 11);
        assert_eq!(r.room(), 89);
        assert_eq!(r.ack(3).unwrap(), 3);
        assert_eq!(r.ack(2).unwrap(), 0, "an old ack frees nothing");
        assert_eq!(collect(r.replay_from(4).unwrap()), b"o world");
        assert_eq!(r.unacked(), 7);
        assert_eq!(
            r.replay_from(3),
            Err(ReplayError::AlreadyAcked { from: 3, base: 4 })
        );
        assert_eq!(
            r.ack(12),
            Err(ReplayError::BeyondSent {
                claimed: 12,
                sent: 11
            })
        );
        assert_eq!(r.ack(11).unwrap(), 7);
        assert_eq!(r.unacked(), 0);
        assert!(collect(r.replay_from(11).unwrap()).is_empty());
        r.push(Bytes::from_static(b"!"));
        assert_eq!(collect(r.replay_from(11).unwrap()), b"!");
    }

    #[test]
    fn ack_frames_roundtrip_and_reject_unknown_types() {
        let a = Ack {
            stream: 7,
            delivered: 1 << 40,
            fin: true,
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
        let mut b = a.encode();
        b[0] = 9;
        assert_eq!(Ack::decode(&b), Err(HeaderError::Malformed));
    }

    #[test]
    fn reply_ext_roundtrip_and_garbage() {
        let t = Ticket::generate();
        let e = ReplyExt {
            ticket: Some(t.clone()),
            resumed: Some(true),
            window_secs: Some(300),
            delivered: Some((12345, false)),
            services: Some(3),
            refused: vec![(1, "no service `ssh`".into()), (2, String::new())],
        };
        let b = e.encode();
        assert_eq!(u16::from_be_bytes([b[0], b[1]]) as usize, b.len() - 2);
        assert_eq!(ReplyExt::decode_body(&b[2..]).unwrap(), e);
        assert_eq!(ReplyExt::decode_body(&[]).unwrap(), ReplyExt::default());
        assert!(ReplyExt::decode_body(&[EXT_TICKET, 0, 3, 1, 2, 3]).is_err());
        assert!(ReplyExt::decode_body(&[EXT_RESUMED, 0, 1, 7]).is_err());
        assert!(ReplyExt::decode_body(&[EXT_REFUSED, 0, 1, 7]).is_err());
        assert!(ReplyExt::decode_body(&[EXT_REFUSED, 0, 3, 0, 0, 0xff]).is_err());
        // long messages are cut on a char boundary, and only what fits is sent
        let many = ReplyExt {
            refused: (0..64).map(|i| (i, "é".repeat(200))).collect(),
            ..Default::default()
        };
        let b = many.encode();
        assert!(b.len() - 2 <= MAX_BODY);
        let back = ReplyExt::decode_body(&b[2..]).unwrap();
        assert!(!back.refused.is_empty() && back.refused.len() < 64);
        assert!(back.refused.iter().all(|(_, m)| m.len() <= REFUSED_MESSAGE));
        // unknown tags are skipped
        assert_eq!(
            ReplyExt::decode_body(&[99, 0, 1, 0]).unwrap(),
            ReplyExt::default()
        );
        let mut x: u32 = 7;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let buf: Vec<u8> = (0..(x % 40)).map(|i| (x >> (i % 24)) as u8).collect();
            let _ = ReplyExt::decode_body(&buf);
        }
    }

    #[test]
    fn tickets_compare_by_id_and_secret() {
        let t = Ticket::generate();
        let again = Ticket::from_bytes(&t.to_bytes()).unwrap();
        assert!(t.secret_matches(&again));
        let rotated = t.rotate();
        assert_eq!(rotated.id, t.id);
        assert!(!t.secret_matches(&rotated));
        assert!(Ticket::from_bytes(&[0; 47]).is_none());
    }
}
