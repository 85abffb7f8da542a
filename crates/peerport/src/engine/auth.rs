//! Who may use a sender.
//!
//! Two models, chosen by the sender:
//! * **Token** (default): the receiver must present the secret token carried
//!   in the ticket the sender printed. With `--secret-file` the token is
//!   derived from the identity, so it survives restarts; without, it is fresh
//!   per run.
//! * **Pinned peers**: with `--allowed-peer ID` (or an authorized-peers file)
//!   only those endpoint ids get in, token or not. The peer id is
//!   authenticated by the QUIC/TLS handshake, so it cannot be spoofed.
//! * **Pinned by the transport**: in the copy-paste modes each session's
//!   connection is only accepted from the key or certificate named in the
//!   blob, before it reaches the engine; the engine then admits it.

use std::collections::HashSet;

/// The sender's access policy.
#[derive(Debug, Clone)]
pub struct Authorizer {
    token: Vec<u8>,
    allowed_peers: HashSet<String>,
    transport_pinned: bool,
}

impl Authorizer {
    /// A policy that demands `token`, or, if `allowed_peers` is not empty,
    /// one of those peer ids.
    pub fn new(token: Vec<u8>, allowed_peers: impl IntoIterator<Item = String>) -> Self {
        Authorizer {
            token,
            allowed_peers: allowed_peers.into_iter().collect(),
            transport_pinned: false,
        }
    }

    /// A policy for connections whose peer the transport already pinned
    /// (copy-paste modes: key or certificate fingerprint from the blob).
    pub fn transport_pinned() -> Self {
        Authorizer {
            token: Vec::new(),
            allowed_peers: HashSet::new(),
            transport_pinned: true,
        }
    }

    /// Whether peers are pinned by id.
    pub fn pins_peers(&self) -> bool {
        !self.allowed_peers.is_empty()
    }

    /// Check an authenticated peer id and the token it presented.
    pub fn check(&self, peer_id: &str, token: Option<&[u8]>) -> Result<(), String> {
        if self.transport_pinned {
            return Ok(());
        }
        if self.pins_peers() {
            return if self.allowed_peers.contains(peer_id) {
                Ok(())
            } else {
                Err(format!(
                    "peer {peer_id} is not in the sender's allowed peers"
                ))
            };
        }
        match token {
            Some(t) if constant_time_eq(t, &self.token) => Ok(()),
            Some(_) => Err("wrong access token: use the ticket the sender printed".into()),
            None => Err(
                "no access token: connect with the sender's full ticket, not only its id".into(),
            ),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_policy() {
        let a = Authorizer::new(vec![1; 16], []);
        assert!(a.check("p", Some(&[1; 16])).is_ok());
        assert!(a.check("p", Some(&[2; 16])).is_err());
        assert!(a.check("p", Some(&[1; 15])).is_err());
        assert!(a.check("p", None).is_err());
    }

    #[test]
    fn pinned_policy_ignores_token() {
        let a = Authorizer::new(vec![1; 16], ["good".to_string()]);
        assert!(a.check("good", None).is_ok());
        assert!(a.check("bad", Some(&[1; 16])).is_err());
    }

    #[test]
    fn empty_token_never_matches() {
        let a = Authorizer::new(vec![], []);
        assert!(a.check("p", Some(&[])).is_err());
    }
}
