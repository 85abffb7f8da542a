//! What a receiver asks a sender for, one per `--target`: a named service
//! or a destination, carried in the hello's want tags (see [`super::header`]).

use super::{tlv::HeaderError, Protocol};

/// The wire byte of a protocol in headers.
pub(super) fn protocol_byte(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
    }
}

/// What a receiver asks a sender for (a hello lists one per `--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// A service or a destination.
    pub what: Wanted,
}

/// A named service or a receiver-chosen destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// A service by name (`""`: the default service).
    Service(String),
    /// A destination the sender's `--allow` rules must cover.
    Destination {
        /// Host name or IP literal (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// Destinations named per connection (a SOCKS5 front), each under the
    /// `--allow` rules.
    Dynamic,
}

impl Want {
    /// `protocol u8 | 0 | name` or `protocol u8 | 1 | port u16 BE | host`.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = vec![protocol_byte(self.protocol)];
        match &self.what {
            Wanted::Service(name) => {
                v.push(0);
                v.extend_from_slice(name.as_bytes());
            }
            Wanted::Destination { host, port } => {
                v.push(1);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(host.as_bytes());
            }
            Wanted::Dynamic => v.push(2),
        }
        v
    }

    pub(super) fn decode(v: &[u8]) -> Result<Self, HeaderError> {
        let protocol = match v.first() {
            Some(0) => Protocol::Tcp,
            Some(1) => Protocol::Udp,
            _ => return Err(HeaderError::Malformed),
        };
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| HeaderError::Malformed)
        };
        let what = match v.get(1) {
            Some(0) => Wanted::Service(text(&v[2..])?),
            Some(1) if v.len() > 4 => Wanted::Destination {
                port: u16::from_be_bytes([v[2], v[3]]),
                host: text(&v[4..])?,
            },
            Some(2) if v.len() == 2 => Wanted::Dynamic,
            _ => return Err(HeaderError::Malformed),
        };
        Ok(Want { protocol, what })
    }
}

impl Want {
    /// Whether `wants` is one target for the default service: a hello
    /// then lists nothing (the protocol every sender understands).
    pub fn default_only(wants: &[Want]) -> bool {
        matches!(wants, [Want { what: Wanted::Service(n), .. }] if n.is_empty())
    }

    /// A short name for counters: the service's name (`default` for
    /// the default service), or `PROTO://HOST:PORT` for a destination.
    pub fn short(&self) -> String {
        match &self.what {
            Wanted::Service(n) if n.is_empty() => "default".into(),
            Wanted::Service(n) => n.clone(),
            Wanted::Destination { host, port } if host.contains(':') => {
                format!("{}://[{host}]:{port}", self.protocol)
            }
            Wanted::Destination { host, port } => format!("{}://{host}:{port}", self.protocol),
            Wanted::Dynamic => "socks5".into(),
        }
    }
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.what {
            Wanted::Service(n) if n.is_empty() => {
                write!(f, "the default service ({})", self.protocol)
            }
            Wanted::Service(n) => write!(f, "service `{n}` ({})", self.protocol),
            Wanted::Destination { host, port } if host.contains(':') => {
                write!(f, "destination {}://[{host}]:{port}", self.protocol)
            }
            Wanted::Destination { host, port } => {
                write!(f, "destination {}://{host}:{port}", self.protocol)
            }
            Wanted::Dynamic => write!(
                f,
                "destinations named by SOCKS5 clients ({})",
                self.protocol
            ),
        }
    }
}
