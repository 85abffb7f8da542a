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
//!
//! Resumable streams (see [`super::resume`]) add, without a version bump:
//! a hello tag asking for resumption (empty: a new session; 48 bytes: the
//! ticket of the session to resume), a stream id tag on TCP streams, the
//! [`Kind::Resume`] stream, and the statuses [`Status::OkExt`] (a reply
//! extension follows) and [`Status::Gone`]. A sender only uses them with a
//! receiver that asked, so older peers on either side see today's protocol.

use super::resume::{decode_delivered, encode_delivered, ReplyExt, Ticket};
pub use super::tlv::{HeaderError, MAX_BODY, VERSION};
pub use super::want::{Want, Wanted};
use super::{
    tlv::{put_tlv, tlvs},
    want::protocol_byte,
    Protocol,
};

const MAGIC: &[u8; 2] = b"PP";

const TAG_TOKEN: u8 = 1;
const TAG_PROTOCOL: u8 = 2;
const TAG_SOFTWARE: u8 = 3;
const TAG_RESUME: u8 = 4;
const TAG_STREAM: u8 = 5;
const TAG_DELIVERED: u8 = 6;
const TAG_WANT: u8 = 7;
const TAG_SERVICE: u8 = 8;
const TAG_CLIENT: u8 = 9;
const TAG_DEST: u8 = 10;

/// What a stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Session opening: authentication and protocol check.
    Hello = 1,
    /// One forwarded TCP connection.
    Tcp = 2,
    /// A resumable TCP stream continued on a new connection.
    Resume = 3,
}

/// What a hello asks about resumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOffer {
    /// Make this session resumable.
    New,
    /// Resume the session of this ticket (else start a new one).
    Resume(Ticket),
}

impl ResumeOffer {
    /// The ticket of the session to resume, if any.
    pub fn ticket(&self) -> Option<&Ticket> {
        match self {
            ResumeOffer::New => None,
            ResumeOffer::Resume(t) => Some(t),
        }
    }
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
    /// Resumption asked for (Hello).
    pub resume: Option<ResumeOffer>,
    /// Stream id within a resumable session (Tcp, Resume).
    pub stream: Option<u64>,
    /// Bytes the receiver delivered, and whether the FIN too (Resume).
    pub delivered: Option<(u64, bool)>,
    /// What the receiver asks for, one per `--target` (Hello; empty: the
    /// default service, with `protocol`).
    pub wants: Vec<Want>,
    /// Which of the hello's wants this stream is for (Tcp; absent: 0).
    pub service: Option<u16>,
    /// The local client's address and the address it connected to, on
    /// the receiver (Tcp; for PROXY protocol headers towards a service).
    pub client: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// The destination a SOCKS5 client named (Tcp, for a `Dynamic` want).
    pub dest: Option<(String, u16)>,
}

impl Request {
    /// A Hello carrying a token and the receiver's protocol.
    pub fn hello(token: Option<&[u8]>, protocol: Protocol) -> Self {
        Request {
            kind: Some(Kind::Hello),
            token: token.map(|t| t.to_vec()),
            protocol: Some(protocol),
            software: Some(concat!("peerport/", env!("CARGO_PKG_VERSION")).to_string()),
            ..Default::default()
        }
    }

    /// Ask for resumption.
    pub fn with_resume(mut self, offer: Option<ResumeOffer>) -> Self {
        self.resume = offer;
        self
    }

    /// Ask for these services and destinations.
    pub fn with_wants(mut self, wants: Vec<Want>) -> Self {
        self.wants = wants;
        self
    }

    /// For the hello's want number `index` (`None`: the default).
    pub fn with_service(mut self, index: Option<u16>) -> Self {
        self.service = index;
        self
    }

    /// With the local client's address and the address it connected to.
    pub fn with_client(
        mut self,
        client: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    ) -> Self {
        self.client = client;
        self
    }

    /// For a destination named with this connection (SOCKS5).
    pub fn with_dest(mut self, dest: Option<(String, u16)>) -> Self {
        self.dest = dest;
        self
    }

    /// A TCP stream header of resumable stream `id`.
    pub fn tcp_stream(id: u64) -> Self {
        Request {
            kind: Some(Kind::Tcp),
            stream: Some(id),
            ..Default::default()
        }
    }

    /// Continue resumable stream `id`; the receiver delivered `delivered`.
    pub fn resume(id: u64, delivered: (u64, bool)) -> Self {
        Request {
            kind: Some(Kind::Resume),
            stream: Some(id),
            delivered: Some(delivered),
            ..Default::default()
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
        let mut tlv = |tag: u8, v: &[u8]| put_tlv(&mut body, tag, v);
        if let Some(t) = &self.token {
            tlv(TAG_TOKEN, t);
        }
        if let Some(p) = self.protocol {
            tlv(TAG_PROTOCOL, &[protocol_byte(p)]);
        }
        if let Some(s) = &self.software {
            tlv(TAG_SOFTWARE, s.as_bytes());
        }
        match &self.resume {
            Some(ResumeOffer::New) => tlv(TAG_RESUME, &[]),
            Some(ResumeOffer::Resume(t)) => tlv(TAG_RESUME, &t.to_bytes()),
            None => {}
        }
        if let Some(id) = self.stream {
            tlv(TAG_STREAM, &id.to_be_bytes());
        }
        if let Some(d) = self.delivered {
            tlv(TAG_DELIVERED, &encode_delivered(d));
        }
        for w in &self.wants {
            tlv(TAG_WANT, &w.encode());
        }
        if let Some(i) = self.service {
            tlv(TAG_SERVICE, &i.to_be_bytes());
        }
        if let Some((host, port)) = &self.dest {
            let mut v = port.to_be_bytes().to_vec();
            v.extend_from_slice(host.as_bytes());
            tlv(TAG_DEST, &v);
        }
        if let Some((from, to)) = self.client {
            tlv(TAG_CLIENT, format!("{from} {to}").as_bytes());
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
            3 => Kind::Resume,
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
        for (tag, v) in tlvs(&buf[6..6 + len]) {
            let v = v?;
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
                TAG_RESUME => {
                    req.resume = Some(match v {
                        [] => ResumeOffer::New,
                        t => ResumeOffer::Resume(
                            Ticket::from_bytes(t).ok_or(HeaderError::Malformed)?,
                        ),
                    })
                }
                TAG_STREAM => {
                    req.stream = Some(u64::from_be_bytes(
                        v.try_into().map_err(|_| HeaderError::Malformed)?,
                    ))
                }
                TAG_DELIVERED => req.delivered = Some(decode_delivered(v)?),
                TAG_WANT => req.wants.push(Want::decode(v)?),
                TAG_DEST => {
                    if v.len() < 3 {
                        return Err(HeaderError::Malformed);
                    }
                    let host = std::str::from_utf8(&v[2..]).map_err(|_| HeaderError::Malformed)?;
                    req.dest = Some((host.to_string(), u16::from_be_bytes([v[0], v[1]])));
                }
                TAG_CLIENT => {
                    let text = std::str::from_utf8(v).map_err(|_| HeaderError::Malformed)?;
                    let (a, b) = text.split_once(' ').ok_or(HeaderError::Malformed)?;
                    let parse = |t: &str| t.parse().map_err(|_| HeaderError::Malformed);
                    req.client = Some((parse(a)?, parse(b)?));
                }
                TAG_SERVICE => {
                    req.service = Some(u16::from_be_bytes(
                        v.try_into().map_err(|_| HeaderError::Malformed)?,
                    ))
                }
                _ => {} // unknown tags are skipped: forward compatibility
            }
        }
        Ok(Some((req, 6 + len)))
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
    /// Go ahead; a reply extension follows (only to a peer that asked).
    OkExt = 6,
    /// The resumable stream asked for is not held (any more).
    Gone = 7,
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

    /// A success reply followed by a [`super::resume::ReplyExt`].
    pub fn ok_ext() -> Self {
        Reply {
            status: Status::OkExt,
            message: String::new(),
        }
    }

    /// The whole answer to a hello or a resume stream: an `OkExt` reply
    /// followed by the extension.
    pub fn ok_with(ext: &ReplyExt) -> Vec<u8> {
        let mut out = Reply::ok_ext().encode();
        out.extend_from_slice(&ext.encode());
        out
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
            6 => Status::OkExt,
            7 => Status::Gone,
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
    fn wants_and_service_index_roundtrip() {
        let wants = vec![
            Want {
                protocol: Protocol::Tcp,
                what: Wanted::Service("ssh".into()),
            },
            Want {
                protocol: Protocol::Udp,
                what: Wanted::Service(String::new()),
            },
            Want {
                protocol: Protocol::Tcp,
                what: Wanted::Destination {
                    host: "fd00::5".into(),
                    port: 22,
                },
            },
        ];
        let h = Request::hello(None, Protocol::Tcp).with_wants(wants.clone());
        let (d, _) = Request::decode(&h.encode()).unwrap().unwrap();
        assert_eq!(d.wants, wants);
        assert_eq!(wants[2].to_string(), "destination tcp://[fd00::5]:22");
        let client = Some((
            "127.0.0.1:5000".parse().unwrap(),
            "[::1]:2222".parse().unwrap(),
        ));
        let t = Request::tcp_stream(9)
            .with_service(Some(2))
            .with_client(client)
            .with_dest(Some(("db.internal".into(), 5432)));
        let (d, _) = Request::decode(&t.encode()).unwrap().unwrap();
        assert_eq!((d.stream, d.service, d.client), (Some(9), Some(2), client));
        assert_eq!(d.dest, Some(("db.internal".to_string(), 5432)));
        let dynamic = Want {
            protocol: Protocol::Tcp,
            what: Wanted::Dynamic,
        };
        assert_eq!(Want::decode(&dynamic.encode()).unwrap(), dynamic);
        // malformed wants are errors, not panics
        for bad in [
            &[][..],
            &[2, 0],
            &[0, 1, 0, 22],
            &[0, 3],
            &[0, 2, 1],
            &[0, 0, 0xff],
        ] {
            assert!(Want::decode(bad).is_err(), "{bad:?}");
        }
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
    fn resume_fields_roundtrip() {
        let t = Ticket::generate();
        for r in [
            Request::hello(None, Protocol::Tcp).with_resume(Some(ResumeOffer::New)),
            Request::hello(None, Protocol::Tcp).with_resume(Some(ResumeOffer::Resume(t))),
            Request::tcp_stream(u64::MAX),
            Request::resume(3, (1 << 33, true)),
        ] {
            let b = r.encode();
            assert_eq!(Request::decode(&b).unwrap().unwrap(), (r, b.len()));
        }
        // a resume tag of the wrong size
        let b = [b'P', b'P', 1, 1, 0, 5, TAG_RESUME, 0, 2, 1, 2];
        assert_eq!(Request::decode(&b), Err(HeaderError::Malformed));
        let b = [b'P', b'P', 1, 3, 0, 4, TAG_STREAM, 0, 1, 1];
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
