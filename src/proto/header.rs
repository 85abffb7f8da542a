//! The versioned header that opens every QUIC stream, and the sender's reply.
//!
//! Request (receiver -> sender), the first bytes of each bidirectional stream:
//!
//! ```text
//! "PP" | version u8 (=1) | kind u8 | body length u16 BE | body
//! body = TLV*  (tag u8 | length u16 BE | value)
//! ```
//!
//! Unknown TLV tags are skipped, so later features (requested source, more
//! auth, UDP control) add tags without a protocol break. The first stream of
//! a session is a [`Kind::Hello`] (authentication and protocol check); every
//! later stream is a [`Kind::Tcp`] carrying one TCP connection.
//!
//! Reply (sender -> receiver): `version u8 | status u8 | length u16 BE | UTF-8 message`.

use crate::addr::Protocol;

/// Current protocol version.
pub const VERSION: u8 = 1;
const MAGIC: &[u8; 2] = b"PP";
/// Largest header body accepted.
pub const MAX_BODY: usize = 4096;

const TAG_TOKEN: u8 = 1;
const TAG_PROTOCOL: u8 = 2;
const TAG_SOFTWARE: u8 = 3;

/// What a stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Session opening: authentication and protocol check.
    Hello = 1,
    /// One forwarded TCP connection.
    Tcp = 2,
}

/// A decoded request header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Stream purpose (`None` only while building).
    pub kind: Option<Kind>,
    /// Access token (Hello).
    pub token: Option<Vec<u8>>,
    /// Protocol the receiver forwards (Hello).
    pub protocol: Option<Protocol>,
    /// Free-form software version of the receiver (Hello).
    pub software: Option<String>,
}

/// Header decoding errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a peerport stream.
    #[error("peer did not speak the peerport protocol (bad magic)")]
    Magic,
    /// Newer peer.
    #[error("peer speaks peerport protocol version {0}, this build speaks {VERSION}: upgrade the older side")]
    Version(u8),
    /// Unknown stream kind.
    #[error("unknown stream kind {0}")]
    Kind(u8),
    /// Too large.
    #[error("header of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLarge(usize),
    /// Inconsistent TLV.
    #[error("malformed header field")]
    Malformed,
    /// Unknown status.
    #[error("unknown reply status {0}")]
    Status(u8),
}

impl Request {
    /// A Hello carrying a token and the receiver's protocol.
    pub fn hello(token: Option<&[u8]>, protocol: Protocol) -> Self {
        Request {
            kind: Some(Kind::Hello),
            token: token.map(|t| t.to_vec()),
            protocol: Some(protocol),
            software: Some(concat!("peerport/", env!("CARGO_PKG_VERSION")).to_string()),
        }
    }

    /// A TCP stream header.
    pub fn tcp() -> Self {
        Request {
            kind: Some(Kind::Tcp),
            ..Default::default()
        }
    }

    /// Serialize.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut tlv = |tag: u8, v: &[u8]| {
            body.push(tag);
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
        };
        if let Some(t) = &self.token {
            tlv(TAG_TOKEN, t);
        }
        if let Some(p) = self.protocol {
            tlv(TAG_PROTOCOL, &[protocol_byte(p)]);
        }
        if let Some(s) = &self.software {
            tlv(TAG_SOFTWARE, s.as_bytes());
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.kind.unwrap_or(Kind::Tcp) as u8);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parse from the start of `buf`. `Ok(None)` means more bytes are needed;
    /// `Ok(Some((req, n)))` consumed `n` bytes.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, HeaderError> {
        for (i, m) in MAGIC.iter().enumerate() {
            match buf.get(i) {
                None => return Ok(None),
                Some(b) if b != m => return Err(HeaderError::Magic),
                _ => {}
            }
        }
        let Some(&version) = buf.get(2) else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        if buf.len() < 6 {
            return Ok(None);
        }
        let kind = match buf[3] {
            1 => Kind::Hello,
            2 => Kind::Tcp,
            k => return Err(HeaderError::Kind(k)),
        };
        let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
        if len > MAX_BODY {
            return Err(HeaderError::TooLarge(len));
        }
        if buf.len() < 6 + len {
            return Ok(None);
        }
        let mut req = Request {
            kind: Some(kind),
            ..Default::default()
        };
        let mut body = &buf[6..6 + len];
        while !body.is_empty() {
            if body.len() < 3 {
                return Err(HeaderError::Malformed);
            }
            let tag = body[0];
            let l = u16::from_be_bytes([body[1], body[2]]) as usize;
            let v = body.get(3..3 + l).ok_or(HeaderError::Malformed)?;
            match tag {
                TAG_TOKEN => req.token = Some(v.to_vec()),
                TAG_PROTOCOL => {
                    req.protocol = Some(match v {
                        [0] => Protocol::Tcp,
                        [1] => Protocol::Udp,
                        _ => return Err(HeaderError::Malformed),
                    })
                }
                TAG_SOFTWARE => req.software = Some(String::from_utf8_lossy(v).into_owned()),
                _ => {} // unknown tags are skipped: forward compatibility
            }
            body = &body[3 + l..];
        }
        Ok(Some((req, 6 + len)))
    }
}

fn protocol_byte(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
    }
}

/// Outcome the sender reports on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Go ahead.
    Ok = 0,
    /// The receiver did not present valid credentials.
    Unauthorized = 1,
    /// The sender could not reach its source service.
    ConnectFailed = 2,
    /// The request was malformed.
    BadRequest = 3,
    /// Receiver and sender forward different protocols.
    ProtocolMismatch = 4,
    /// The sender is at capacity.
    Busy = 5,
}

/// The sender's reply to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// Human-readable detail.
    pub message: String,
}

impl Reply {
    /// A success reply.
    pub fn ok() -> Self {
        Reply {
            status: Status::Ok,
            message: String::new(),
        }
    }

    /// A failure reply.
    pub fn err(status: Status, message: impl Into<String>) -> Self {
        Reply {
            status,
            message: message.into(),
        }
    }

    /// Serialize (messages are cut to [`MAX_BODY`] bytes on a char boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = self.message.as_str();
        while msg.len() > MAX_BODY {
            let mut cut = MAX_BODY;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg = &msg[..cut];
        }
        let mut out = vec![VERSION, self.status as u8];
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(msg.as_bytes());
        out
    }

    /// Parse; `Ok(None)` means more bytes are needed.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, HeaderError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        if buf.len() < 4 {
            return Ok(None);
        }
        let status = match buf[1] {
            0 => Status::Ok,
            1 => Status::Unauthorized,
            2 => Status::ConnectFailed,
            3 => Status::BadRequest,
            4 => Status::ProtocolMismatch,
            5 => Status::Busy,
            s => return Err(HeaderError::Status(s)),
        };
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if len > MAX_BODY {
            return Err(HeaderError::TooLarge(len));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let message = String::from_utf8_lossy(&buf[4..4 + len]).into_owned();
        Ok(Some((Reply { status, message }, 4 + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_roundtrip_and_partial() {
        let h = Request::hello(Some(&[1; 16]), Protocol::Udp);
        let bytes = h.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Request::decode(&bytes[..cut]).unwrap(), None, "cut {cut}");
        }
        let mut more = bytes.clone();
        more.extend_from_slice(b"payload");
        let (d, n) = Request::decode(&more).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(d, h);
    }

    #[test]
    fn tcp_header_is_small() {
        let b = Request::tcp().encode();
        assert_eq!(b.len(), 6);
        assert_eq!(
            Request::decode(&b).unwrap().unwrap().0.kind,
            Some(Kind::Tcp)
        );
    }

    #[test]
    fn unknown_tags_are_skipped() {
        let mut b = vec![b'P', b'P', 1, 2, 0, 7, 99, 0, 4, 1, 2, 3, 4];
        assert_eq!(Request::decode(&b).unwrap().unwrap().1, 13);
        b[5] = 6; // length now cuts the TLV
        assert_eq!(Request::decode(&b), Err(HeaderError::Malformed));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Request::decode(b"SSH-2.0"), Err(HeaderError::Magic));
        assert_eq!(Request::decode(b"PP\x02"), Err(HeaderError::Version(2)));
        assert_eq!(
            Request::decode(b"PP\x01\x09\0\0"),
            Err(HeaderError::Kind(9))
        );
        assert_eq!(
            Request::decode(b"PP\x01\x01\xff\xff"),
            Err(HeaderError::TooLarge(65535))
        );
        assert_eq!(
            Request::decode(b"PP\x01\x01\0\x01\x01"),
            Err(HeaderError::Malformed)
        );
    }

    #[test]
    fn reply_roundtrip() {
        let r = Reply::err(Status::ConnectFailed, "connection refused");
        let b = r.encode();
        assert_eq!(Reply::decode(&b[..3]).unwrap(), None);
        assert_eq!(Reply::decode(&b).unwrap().unwrap(), (r, b.len()));
        assert_eq!(Reply::decode(&[1, 42, 0, 0]), Err(HeaderError::Status(42)));
        let long = Reply::err(Status::BadRequest, "é".repeat(5000));
        let (d, _) = Reply::decode(&long.encode()).unwrap().unwrap();
        assert!(d.message.len() <= MAX_BODY);
    }

    #[test]
    fn decode_never_panics_on_any_short_input() {
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 24) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 24)) as u8).collect();
            if x.is_multiple_of(3) && buf.len() >= 3 {
                buf[0] = b'P';
                buf[1] = b'P';
                buf[2] = 1;
            }
            let _ = Request::decode(&buf);
            let _ = Reply::decode(&buf);
        }
    }
}
