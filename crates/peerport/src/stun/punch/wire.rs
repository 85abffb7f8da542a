//! The punch's messages (sans-IO): STUN Binding requests and responses
//! in ICE's own shape (RFC 8445 §7.2: USERNAME `responder:sender`,
//! MESSAGE-INTEGRITY with the responder's short-term key, FINGERPRINT),
//! plus one attribute of ours that says what the message is for.
//!
//! The keys are derived from the ICE passwords the two sides exchanged in
//! their offer and answer, with a label of their own, so a punch message
//! is never a valid ICE check and an ICE check never a punch message. Only
//! someone who saw both blobs can make a request this side answers, and
//! a response is never larger than its request (no amplification).

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use stun::{
    agent::TransactionId,
    attributes::{AttrType, ATTR_USERNAME},
    fingerprint::FINGERPRINT,
    integrity::MessageIntegrity,
    message::{Getter, Message, MessageType, Setter, BINDING_REQUEST, BINDING_SUCCESS},
    textattrs::Username,
    xoraddr::XorMappedAddress,
};

/// Our attribute (comprehension-optional range): `version u8 | kind u8 |
/// role u8 | 0 u8 | index u16 | 0 u16`.
pub const ATTR_PUNCH: AttrType = AttrType(0xC0A7);
/// The version this code speaks.
const VERSION: u8 = 1;
/// The label the keys are derived with.
const KEY_LABEL: &[u8] = b"peerport punch v1";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Does this 5-tuple work both ways?
    Probe,
    /// Use this 5-tuple (the controlling side nominates, once confirmed).
    Nominate,
}

/// Which side sent it (the ICE roles: the receiver controls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The receiver (ICE controlling).
    Controlling,
    /// The sender (ICE controlled).
    Controlled,
}

/// The punch's attribute, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Punch {
    /// What it asks for.
    pub kind: Kind,
    /// Who sent it.
    pub role: Role,
    /// The hard side's socket index (for logs and tests).
    pub index: u16,
}

/// Why a datagram is not a valid punch message for us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a STUN message, or a damaged one.
    #[error("not a STUN message: {0}")]
    NotStun(String),
    /// A STUN message of another type or for another purpose.
    #[error("not a punch message")]
    NotPunch,
    /// Addressed to other credentials.
    #[error("wrong username")]
    Username,
    /// The integrity check failed: not from the peer.
    #[error("integrity check failed")]
    Integrity,
    /// The fingerprint does not match.
    #[error("fingerprint check failed")]
    Fingerprint,
    /// Another transaction than the one expected.
    #[error("unexpected transaction")]
    Transaction,
}

/// The credentials of one punch: both sides' ICE user fragments and the
/// keys derived from their passwords.
#[derive(Clone)]
pub struct Keys {
    own_ufrag: String,
    peer_ufrag: String,
    own_key: String,
    peer_key: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the keys stay out of logs
        f.debug_struct("Keys")
            .field("own_ufrag", &self.own_ufrag)
            .field("peer_ufrag", &self.peer_ufrag)
            .finish_non_exhaustive()
    }
}

fn derive(pwd: &str) -> String {
    let mut h = Sha256::new();
    h.update(KEY_LABEL);
    h.update(pwd.as_bytes());
    hex::encode(h.finalize())
}

impl Keys {
    /// From this side's and the peer's ICE credentials.
    pub fn new(own_ufrag: &str, own_pwd: &str, peer_ufrag: &str, peer_pwd: &str) -> Keys {
        Keys {
            own_ufrag: own_ufrag.to_string(),
            peer_ufrag: peer_ufrag.to_string(),
            own_key: derive(own_pwd),
            peer_key: derive(peer_pwd),
        }
    }

    /// The peer's view of the same credentials.
    #[cfg(test)]
    fn swapped(&self) -> Keys {
        Keys {
            own_ufrag: self.peer_ufrag.clone(),
            peer_ufrag: self.own_ufrag.clone(),
            own_key: self.peer_key.clone(),
            peer_key: self.own_key.clone(),
        }
    }
}

impl Setter for Punch {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        let kind = match self.kind {
            Kind::Probe => 0,
            Kind::Nominate => 1,
        };
        let role = match self.role {
            Role::Controlling => 0,
            Role::Controlled => 1,
        };
        let i = self.index.to_be_bytes();
        m.add(ATTR_PUNCH, &[VERSION, kind, role, 0, i[0], i[1], 0, 0]);
        Ok(())
    }
}

impl Punch {
    fn get_from(m: &Message) -> Result<Punch, WireError> {
        let v = m.get(ATTR_PUNCH).map_err(|_| WireError::NotPunch)?;
        let [VERSION, kind, role, _, i0, i1, ..] = v[..] else {
            return Err(WireError::NotPunch);
        };
        let kind = match kind {
            0 => Kind::Probe,
            1 => Kind::Nominate,
            _ => return Err(WireError::NotPunch),
        };
        let role = match role {
            0 => Role::Controlling,
            1 => Role::Controlled,
            _ => return Err(WireError::NotPunch),
        };
        Ok(Punch {
            kind,
            role,
            index: u16::from_be_bytes([i0, i1]),
        })
    }
}

/// A request towards the peer, signed with the peer's key.
pub fn request(keys: &Keys, tid: [u8; 12], punch: Punch) -> Vec<u8> {
    let mut m = Message::new();
    let built = m.build(&[
        Box::new(TransactionId(tid)),
        Box::new(BINDING_REQUEST),
        Box::new(Username::new(
            ATTR_USERNAME,
            format!("{}:{}", keys.peer_ufrag, keys.own_ufrag),
        )),
        Box::new(punch),
        Box::new(MessageIntegrity::new_short_term_integrity(
            keys.peer_key.clone(),
        )),
        Box::new(FINGERPRINT),
    ]);
    debug_assert!(built.is_ok(), "fixed-size attributes always fit");
    m.raw
}

/// A request the peer sent us, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Its transaction, for the response.
    pub tid: [u8; 12],
    /// What it asks for.
    pub punch: Punch,
}

fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes)
        .map_err(|e| WireError::NotStun(e.to_string()))?;
    Ok(m)
}

fn check(m: &mut Message, key: &str) -> Result<(), WireError> {
    FINGERPRINT.check(m).map_err(|_| WireError::Fingerprint)?;
    MessageIntegrity::new_short_term_integrity(key.to_string())
        .check(m)
        .map_err(|_| WireError::Integrity)
}

fn is(m: &Message, t: MessageType) -> bool {
    m.typ.method == t.method && m.typ.class == t.class
}

/// Check a request that came in: addressed to us, from the peer.
pub fn parse_request(keys: &Keys, bytes: &[u8]) -> Result<Request, WireError> {
    let mut m = decode(bytes)?;
    if !is(&m, BINDING_REQUEST) || !m.contains(ATTR_PUNCH) {
        return Err(WireError::NotPunch);
    }
    let mut user = Username::new(ATTR_USERNAME, String::new());
    user.get_from(&m).map_err(|_| WireError::Username)?;
    if user.text != format!("{}:{}", keys.own_ufrag, keys.peer_ufrag) {
        return Err(WireError::Username);
    }
    check(&mut m, &keys.own_key)?;
    Ok(Request {
        tid: m.transaction_id.0,
        punch: Punch::get_from(&m)?,
    })
}

/// The response to `req`: where its sender's datagram came from, signed
/// with our key.
pub fn response(keys: &Keys, req: &Request, from: SocketAddr, role: Role) -> Vec<u8> {
    let mut m = Message::new();
    let built = m.build(&[
        Box::new(TransactionId(req.tid)),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
        Box::new(Punch { role, ..req.punch }),
        Box::new(MessageIntegrity::new_short_term_integrity(
            keys.own_key.clone(),
        )),
        Box::new(FINGERPRINT),
    ]);
    debug_assert!(built.is_ok(), "fixed-size attributes always fit");
    m.raw
}

/// A response the peer sent us, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The request it answers.
    pub tid: [u8; 12],
    /// What the request asked for.
    pub punch: Punch,
    /// Where our request came from, as the peer saw it.
    pub mapped: SocketAddr,
}

/// Check a response that came in: to one of our requests, from the peer.
pub fn parse_response(keys: &Keys, bytes: &[u8]) -> Result<Response, WireError> {
    let mut m = decode(bytes)?;
    if !is(&m, BINDING_SUCCESS) || !m.contains(ATTR_PUNCH) {
        return Err(WireError::NotPunch);
    }
    check(&mut m, &keys.peer_key)?;
    let mut xor = XorMappedAddress::default();
    xor.get_from(&m).map_err(|_| WireError::NotPunch)?;
    Ok(Response {
        tid: m.transaction_id.0,
        punch: Punch::get_from(&m)?,
        mapped: SocketAddr::new(xor.ip, xor.port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(
            "ownU",
            "own-password-0123456789",
            "peerU",
            "peer-password-9876543",
        )
    }

    fn probe(index: u16) -> Punch {
        Punch {
            kind: Kind::Probe,
            role: Role::Controlling,
            index,
        }
    }

    #[test]
    fn request_and_response_round_trip() {
        let me = keys();
        let peer = me.swapped();
        let req = request(&me, [7; 12], probe(42));
        let got = parse_request(&peer, &req).unwrap();
        assert_eq!(got.tid, [7; 12]);
        assert_eq!(got.punch, probe(42));
        let from: SocketAddr = "198.18.0.12:20017".parse().unwrap();
        let resp = response(&peer, &got, from, Role::Controlled);
        assert!(resp.len() <= req.len(), "{} > {}", resp.len(), req.len());
        let r = parse_response(&me, &resp).unwrap();
        assert_eq!(r.tid, [7; 12]);
        assert_eq!(r.mapped, from);
        assert_eq!(r.punch.role, Role::Controlled);
        assert_eq!(r.punch.index, 42);
    }

    #[test]
    fn strangers_and_damage_are_refused() {
        let me = keys();
        let peer = me.swapped();
        let req = request(&me, [1; 12], probe(1));
        // our own request reflected back: wrong username (and key)
        assert_eq!(parse_request(&me, &req), Err(WireError::Username));
        // someone with the ufrags but not the password
        let guess = Keys::new("ownU", "guess", "peerU", "guess");
        let forged = request(&guess, [2; 12], probe(1));
        assert_eq!(parse_request(&peer, &forged), Err(WireError::Integrity));
        // a flipped byte in the middle: fingerprint or integrity fails
        let mut bad = req.clone();
        bad[30] ^= 1;
        assert!(parse_request(&peer, &bad).is_err());
        // truncated anywhere, garbage, and a request where a response is due
        for n in 0..req.len() {
            assert!(parse_request(&peer, &req[..n]).is_err(), "truncated to {n}");
        }
        assert!(matches!(
            parse_request(&peer, b"hello"),
            Err(WireError::NotStun(_))
        ));
        assert_eq!(parse_response(&me, &req), Err(WireError::NotPunch));
        // a response signed with the wrong key
        let got = parse_request(&peer, &req).unwrap();
        let from = "198.18.0.12:1".parse().unwrap();
        let resp = response(&me, &got, from, Role::Controlled);
        assert_eq!(parse_response(&me, &resp), Err(WireError::Integrity));
    }

    #[test]
    fn not_an_ice_check_and_no_ice_check_accepted() {
        // an ICE connectivity check with the plain password is no punch
        // message: the keys are derived with a label
        let me = keys();
        let peer = me.swapped();
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId([3; 12])),
            Box::new(BINDING_REQUEST),
            Box::new(Username::new(ATTR_USERNAME, "peerU:ownU".into())),
            Box::new(probe(0)),
            Box::new(MessageIntegrity::new_short_term_integrity(
                "peer-password-9876543".into(),
            )),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
        assert_eq!(parse_request(&peer, &m.raw), Err(WireError::Integrity));
        assert!(format!("{me:?}").find("password").is_none());
    }
}
