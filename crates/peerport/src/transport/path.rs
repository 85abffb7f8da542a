//! The path a connection's packets take, as data: direct or through a
//! relay, the addresses at each end, ICE candidate types, the relay URL.
//! Logs and status show its [`Display`](std::fmt::Display) form; code
//! reads the fields.

use std::{fmt, net::SocketAddr};

/// Whether a connection's packets go straight to the peer or through a
/// relay (iroh relay, TURN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Straight to the peer's address (possibly through NATs).
    Direct,
    /// Through a relay server.
    Relay,
    /// Not known (no path selected yet).
    #[default]
    Unknown,
}

impl PathKind {
    /// "direct", "relay" or "unknown".
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of an ICE candidate (RFC 8445 section 5.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Candidate {
    /// An address of this host's interfaces.
    Host,
    /// The address a STUN server saw (the NAT's mapping).
    Srflx,
    /// An address learned from the peer's checks.
    Prflx,
    /// An allocation on a TURN server.
    Relay,
}

impl Candidate {
    /// "host", "srflx", "prflx" or "relay", as in SDP.
    pub fn as_str(self) -> &'static str {
        match self {
            Candidate::Host => "host",
            Candidate::Srflx => "srflx",
            Candidate::Prflx => "prflx",
            Candidate::Relay => "relay",
        }
    }
}

/// One end of a path: an address, and its ICE candidate type where ICE
/// chose the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hop {
    /// The address.
    pub addr: SocketAddr,
    /// Its candidate type (ICE modes only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub candidate: Option<Candidate>,
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.candidate {
            Some(c) => write!(f, "{} {}", c.as_str(), self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The path a connection uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathInfo {
    /// Direct or through a relay.
    pub kind: PathKind,
    /// This host's end (ICE: the local candidate; a TURN allocation on a
    /// relayed pair), where the stack says.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub local: Option<Hop>,
    /// The peer's end (on a direct path: the address packets go to).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote: Option<Hop>,
    /// The relay server (iroh relay).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub relay_url: Option<String>,
}

impl PathInfo {
    /// No path selected yet.
    pub fn none() -> Self {
        PathInfo::default()
    }

    /// Straight to `remote`.
    pub fn direct(remote: SocketAddr) -> Self {
        PathInfo {
            kind: PathKind::Direct,
            remote: Some(Hop {
                addr: remote,
                candidate: None,
            }),
            ..Default::default()
        }
    }

    /// Through the relay at `url`.
    pub fn relay(url: impl Into<String>) -> Self {
        PathInfo {
            kind: PathKind::Relay,
            relay_url: Some(url.into()),
            ..Default::default()
        }
    }

    /// The pair ICE selected: relayed when either end is a TURN allocation.
    pub fn ice(local: Hop, remote: Hop) -> Self {
        let relayed = [local.candidate, remote.candidate].contains(&Some(Candidate::Relay));
        PathInfo {
            kind: if relayed {
                PathKind::Relay
            } else {
                PathKind::Direct
            },
            local: Some(local),
            remote: Some(remote),
            relay_url: None,
        }
    }

    /// A few words for a table: the kind and where the packets go
    /// ("direct 10.0.0.2:4433", "relay https://relay.example/",
    /// "relay TURN 192.0.2.1:3478").
    pub fn brief(&self) -> String {
        let turn = |h: &Option<Hop>| h.filter(|h| h.candidate == Some(Candidate::Relay));
        match (self.kind, &self.relay_url) {
            (PathKind::Relay, Some(url)) => format!("relay {url}"),
            (PathKind::Relay, None) => match turn(&self.local).or(turn(&self.remote)) {
                Some(h) => format!("relay TURN {}", h.addr),
                None => "relay".into(),
            },
            (PathKind::Direct, _) => match &self.remote {
                Some(h) => format!("direct {}", h.addr),
                None => "direct".into(),
            },
            (PathKind::Unknown, _) => "unknown".into(),
        }
    }
}

/// "direct ADDR", "relay URL", or for an ICE pair "KIND LOCAL -> REMOTE"
/// with candidate types ("direct host 10.0.0.1:5000 -> srflx 192.0.2.7:6000").
impl fmt::Display for PathInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.local, &self.remote, &self.relay_url) {
            (_, _, Some(url)) => write!(f, "{} {url}", self.kind),
            (Some(l), Some(r), None) => write!(f, "{} {l} -> {r}", self.kind),
            (None, Some(r), None) => write!(f, "{} {r}", self.kind),
            _ if self.kind == PathKind::Unknown => f.write_str("no path selected yet"),
            _ => f.write_str(self.kind.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(addr: &str, c: Candidate) -> Hop {
        Hop {
            addr: addr.parse().unwrap(),
            candidate: Some(c),
        }
    }

    #[test]
    fn kinds_come_from_the_data_and_texts_from_the_kinds() {
        let d = PathInfo::direct("10.0.0.2:4433".parse().unwrap());
        assert_eq!(
            (d.kind, d.to_string()),
            (PathKind::Direct, "direct 10.0.0.2:4433".into())
        );
        let r = PathInfo::relay("https://relay.example/");
        assert_eq!(r.to_string(), "relay https://relay.example/");
        assert_eq!(r.brief(), "relay https://relay.example/");
        let turn = PathInfo::ice(
            hop("192.0.2.1:50000", Candidate::Relay),
            hop("10.0.0.2:4000", Candidate::Host),
        );
        assert_eq!(turn.kind, PathKind::Relay);
        assert_eq!(
            turn.to_string(),
            "relay relay 192.0.2.1:50000 -> host 10.0.0.2:4000"
        );
        assert_eq!(turn.brief(), "relay TURN 192.0.2.1:50000");
        let host = PathInfo::ice(
            hop("10.0.0.1:5000", Candidate::Host),
            hop("192.0.2.7:6000", Candidate::Srflx),
        );
        assert_eq!(host.kind, PathKind::Direct);
        assert_eq!(host.brief(), "direct 192.0.2.7:6000");
        assert_eq!(PathInfo::none().to_string(), "no path selected yet");
        let json = serde_json::to_string(&host).unwrap();
        assert_eq!(serde_json::from_str::<PathInfo>(&json).unwrap(), host);
    }
}
