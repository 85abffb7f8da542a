//! The `iroh` mode ticket: what a receiver needs to reach a sender and be let in.
//!
//! Text form: `ppt1` followed by lowercase unpadded base32 of the binary
//! form, whose last four bytes are the first four of SHA-256 over
//! everything before them. Two versions:
//!
//! * version 1: `1 || endpoint id (32) || token (16) || checksum (4)`,
//!   89 characters; the receiver finds the sender through discovery.
//! * version 2, for a sender on self-hosted relays (a network):
//!   `2 || endpoint id (32) || token (16) || relay QUIC port (2, big endian,
//!   0 = none) || relay count (1) || (length (1) || URL)… || pin count (1)
//!   || SHA-256 pin (32)… || checksum (4)`: the receiver dials the sender
//!   through those relays, trusting a relay certificate whose SHA-256 is
//!   pinned (a self-signed one), with no flag and no discovery. With one
//!   relay and one pin it is about 180 characters.
//!
//! Both are safe to paste into chat, shell and e-mail. The endpoint id is
//! an ed25519 public key (iroh authenticates it in the TLS handshake). The
//! token is a shared secret that the sender demands before it forwards
//! anything, so knowing the sender's id alone is not enough.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

/// Length of the access token in bytes.
pub const TOKEN_LEN: usize = 16;
/// Most relay URLs a ticket carries.
pub const MAX_RELAYS: usize = 4;
/// Most certificate pins a ticket carries.
pub const MAX_PINS: usize = 4;
/// Longest relay URL a ticket carries, in bytes.
pub const MAX_URL_LEN: usize = 255;
const PREFIX: &str = "ppt1";
const NEWEST: u8 = 2;
const HEAD_LEN: usize = 1 + 32 + TOKEN_LEN;
const SUM_LEN: usize = 4;
const V1_LEN: usize = HEAD_LEN + SUM_LEN;

/// A decoded ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The sender's endpoint id (ed25519 public key bytes).
    pub endpoint_id: [u8; 32],
    /// The access token the sender expects.
    pub token: [u8; TOKEN_LEN],
    /// The self-hosted relays the sender uses (none: version 1, found
    /// through discovery).
    pub relays: Relays,
}

/// The self-hosted relays a version 2 ticket names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relays {
    /// Relay URLs (at most [`MAX_RELAYS`], each at most [`MAX_URL_LEN`] bytes).
    pub urls: Vec<String>,
    /// UDP port of the relays' QUIC address discovery; 0: none.
    pub quic_port: u16,
    /// SHA-256 of relay certificates to trust (self-signed ones), at most
    /// [`MAX_PINS`].
    pub pins: Vec<[u8; 32]>,
}

/// Why a ticket could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a peerport ticket at all.
    #[error("not a peerport ticket (it should start with `{PREFIX}`): copy the whole line the sender printed")]
    Prefix,
    /// Not valid base32.
    #[error("the ticket contains characters that do not belong to it: copy it again exactly")]
    Encoding,
    /// Wrong length.
    #[error("the ticket is {0} bytes long, which no ticket is: it was cut off or has extra characters; copy it again")]
    Length(usize),
    /// A ticket from a newer peerport.
    #[error("ticket version {0} is not supported by this peerport (it knows versions 1 and {NEWEST}); upgrade peerport")]
    Version(u8),
    /// Checksum mismatch.
    #[error("the ticket's checksum does not match: it was mistyped or altered; copy it again")]
    Checksum,
    /// The checksum matches but the relay part does not parse.
    #[error(
        "the ticket's relay part is malformed ({0}): copy the ticket the sender printed again"
    )]
    Relays(&'static str),
}

impl Ticket {
    /// Encode to the pasteable text form: version 2 when the ticket names
    /// relays (beyond [`MAX_RELAYS`], [`MAX_PINS`] and URLs longer than
    /// [`MAX_URL_LEN`] are left out), else version 1.
    pub fn encode(&self) -> String {
        let urls: Vec<&[u8]> = self
            .relays
            .urls
            .iter()
            .map(|u| u.as_bytes())
            .filter(|u| !u.is_empty() && u.len() <= MAX_URL_LEN)
            .take(MAX_RELAYS)
            .collect();
        let mut bytes = Vec::with_capacity(V1_LEN);
        bytes.push(if urls.is_empty() { 1 } else { 2 });
        bytes.extend_from_slice(&self.endpoint_id);
        bytes.extend_from_slice(&self.token);
        if !urls.is_empty() {
            bytes.extend_from_slice(&self.relays.quic_port.to_be_bytes());
            bytes.push(urls.len() as u8);
            for u in urls {
                bytes.push(u.len() as u8);
                bytes.extend_from_slice(u);
            }
            let pins = &self.relays.pins[..self.relays.pins.len().min(MAX_PINS)];
            bytes.push(pins.len() as u8);
            for p in pins {
                bytes.extend_from_slice(p);
            }
        }
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..SUM_LEN]);
        format!(
            "{PREFIX}{}",
            BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
        )
    }

    /// Decode the text form. Surrounding whitespace is ignored and the case
    /// of the base32 part does not matter.
    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        let rest = text
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &text[PREFIX.len()..])
            .ok_or(TicketError::Prefix)?;
        let bytes = BASE32_NOPAD
            .decode(rest.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Encoding)?;
        let version = *bytes.first().ok_or(TicketError::Length(0))?;
        if !(1..=NEWEST).contains(&version) {
            return Err(TicketError::Version(version));
        }
        let ok_len = match version {
            1 => bytes.len() == V1_LEN,
            _ => bytes.len() > V1_LEN,
        };
        if !ok_len {
            return Err(TicketError::Length(bytes.len()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - SUM_LEN);
        if Sha256::digest(body)[..SUM_LEN] != *sum {
            return Err(TicketError::Checksum);
        }
        let mut r = Reader(body);
        r.take(1).ok_or(TicketError::Length(0))?;
        let endpoint_id = r.array().ok_or(TicketError::Length(bytes.len()))?;
        let token = r.array().ok_or(TicketError::Length(bytes.len()))?;
        let relays = if version == 1 {
            Relays::default()
        } else {
            relays(&mut r)?
        };
        Ok(Ticket {
            endpoint_id,
            token,
            relays,
        })
    }

    /// Whether it names the sender's relays (version 2): a receiver given
    /// it needs no relay, discovery or certificate setting of its own.
    pub fn names_relays(&self) -> bool {
        !self.relays.urls.is_empty()
    }

    /// Whether `text` looks like a ticket (as opposed to a bare endpoint id).
    pub fn looks_like_ticket(text: &str) -> bool {
        text.trim()
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    }
}

/// The pasteable text form ([`Ticket::encode`]).
impl std::fmt::Display for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

/// The relay part of a version 2 ticket, after the token.
fn relays(r: &mut Reader<'_>) -> Result<Relays, TicketError> {
    let short = TicketError::Relays("it ends early");
    let port: [u8; 2] = r.array().ok_or(short.clone())?;
    let n = r.byte().ok_or(short.clone())? as usize;
    if n == 0 || n > MAX_RELAYS {
        return Err(TicketError::Relays("wrong number of relays"));
    }
    let mut urls = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.byte().ok_or(short.clone())? as usize;
        let url = r.take(len).ok_or(short.clone())?;
        let url = std::str::from_utf8(url)
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or(TicketError::Relays("a relay URL is not text"))?;
        urls.push(url.to_string());
    }
    let n = r.byte().ok_or(short.clone())? as usize;
    if n > MAX_PINS {
        return Err(TicketError::Relays("too many certificate pins"));
    }
    let pins = (0..n)
        .map(|_| r.array().ok_or(short.clone()))
        .collect::<Result<_, _>>()?;
    if !r.0.is_empty() {
        return Err(TicketError::Relays("extra bytes at the end"));
    }
    Ok(Relays {
        urls,
        quic_port: u16::from_be_bytes(port),
        pins,
    })
}

/// Bounds-checked reading of the binary form.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            endpoint_id: [7; 32],
            token: [9; TOKEN_LEN],
            relays: Relays::default(),
        }
    }

    fn with_relay() -> Ticket {
        Ticket {
            relays: Relays {
                urls: vec!["https://192.168.1.10:3340/".into()],
                quic_port: 7842,
                pins: vec![[5; 32]],
            },
            ..sample()
        }
    }

    #[test]
    fn roundtrip() {
        let t = sample();
        let s = t.encode();
        assert!(s.starts_with("ppt1"));
        assert_eq!(s.len(), 89);
        assert_eq!(Ticket::decode(&s).unwrap(), t);
        assert_eq!(
            Ticket::decode(&format!("  {}\r\n", s.to_uppercase())).unwrap(),
            t
        );
    }

    #[test]
    fn version_2_carries_the_relays() {
        let t = with_relay();
        let s = t.encode();
        assert!(s.starts_with("ppt1"), "{s}");
        assert!(s.len() < 200, "{} characters", s.len());
        assert_eq!(Ticket::decode(&s).unwrap(), t);
        // several relays, no pin, no QUIC port
        let t = Ticket {
            relays: Relays {
                urls: vec!["https://a.example/".into(), "https://b.example/".into()],
                quic_port: 0,
                pins: vec![],
            },
            ..sample()
        };
        assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
    }

    /// A version 1 ticket printed by an older sender is still read, and
    /// a sender without relays still prints one.
    #[test]
    fn version_1_is_still_read() {
        let old = "ppt1aedqobyha4dqobyha4dqobyha4dqobyha4dqobyha4dqobyha4dqocijbeeqscijbeeqscijbeeqscls4k7nu";
        let t = Ticket::decode(old).unwrap();
        assert_eq!(t, sample());
        assert_eq!(sample().encode(), old);
    }

    #[test]
    fn rejects_damage() {
        let s = sample().encode();
        assert_eq!(Ticket::decode("hello"), Err(TicketError::Prefix));
        assert_eq!(Ticket::decode(""), Err(TicketError::Prefix));
        assert_eq!(Ticket::decode("ppt1!!!"), Err(TicketError::Encoding));
        assert!(matches!(
            Ticket::decode(&s[..s.len() - 8]),
            Err(TicketError::Length(_)) | Err(TicketError::Encoding)
        ));
        // flip one character in the middle
        for s in [s, with_relay().encode()] {
            let mut chars: Vec<char> = s.chars().collect();
            chars[40] = if chars[40] == 'a' { 'b' } else { 'a' };
            let flipped: String = chars.into_iter().collect();
            assert_eq!(Ticket::decode(&flipped), Err(TicketError::Checksum));
        }
    }

    /// A relay part that lies about its lengths, with a valid checksum,
    /// is refused without a panic.
    #[test]
    fn refuses_a_malformed_relay_part() {
        let head = |v: u8| {
            let mut b = vec![v];
            b.extend_from_slice(&[7; 32]);
            b.extend_from_slice(&[9; TOKEN_LEN]);
            b
        };
        let seal = |mut b: Vec<u8>| {
            let sum = Sha256::digest(&b);
            b.extend_from_slice(&sum[..SUM_LEN]);
            format!("ppt1{}", BASE32_NOPAD.encode(&b).to_ascii_lowercase())
        };
        for tail in [
            vec![0x1e, 0xa2],                   // ends after the port
            vec![0x1e, 0xa2, 0],                // no relay
            vec![0x1e, 0xa2, 9, 1, b'x', 0],    // too many relays
            vec![0x1e, 0xa2, 1, 40, b'x'],      // URL longer than what is left
            vec![0x1e, 0xa2, 1, 1, 0xff, 0],    // URL not UTF-8
            vec![0x1e, 0xa2, 1, 1, b'x', 1, 0], // pin cut off
            vec![0x1e, 0xa2, 1, 1, b'x', 0, 3], // extra byte
        ] {
            let mut b = head(2);
            b.extend_from_slice(&tail);
            assert!(
                matches!(Ticket::decode(&seal(b)), Err(TicketError::Relays(_))),
                "{tail:?}"
            );
        }
        // version 1 with a relay part, and an unknown version
        let mut b = head(1);
        b.push(0);
        assert_eq!(
            Ticket::decode(&seal(b)),
            Err(TicketError::Length(V1_LEN + 1))
        );
        assert_eq!(Ticket::decode(&seal(head(3))), Err(TicketError::Version(3)));
    }

    /// Pseudo-random damage behind a valid checksum: decoding returns,
    /// without a panic, and whatever it accepts encodes back the same.
    #[test]
    fn never_panics_on_resealed_damage() {
        let good = BASE32_NOPAD
            .decode(with_relay().encode()[4..].to_ascii_uppercase().as_bytes())
            .unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = good[..good.len() - SUM_LEN].to_vec();
            let at = (x as usize) % b.len();
            match x >> 60 {
                0..=9 => b[at] = (x >> 20) as u8,
                10..=12 => b.truncate(at.max(1)),
                _ => b.insert(at.max(1), (x >> 28) as u8),
            }
            let sum = Sha256::digest(&b);
            b.extend_from_slice(&sum[..SUM_LEN]);
            let text = format!("ppt1{}", BASE32_NOPAD.encode(&b).to_ascii_lowercase());
            if let Ok(t) = Ticket::decode(&text) {
                assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
            }
        }
    }

    #[test]
    fn never_panics_on_prefix_garbage() {
        for s in [
            "ppt1",
            "PPT1a",
            "ppt1\u{1F600}",
            "pp",
            "ppt",
            "ppt1aaaaaaaa",
            "ppt1ai",
            "ppt1ae",
        ] {
            let _ = Ticket::decode(s);
        }
    }
}
