//! `tcp://host:port` and `udp://host:port` forwarding addresses.

use std::{fmt, net::SocketAddr, str::FromStr};

/// Transport protocol of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP: each connection is one QUIC stream.
    Tcp,
    /// UDP: each packet is one or more QUIC datagrams.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `--source` or `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAddr {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port number (0 allowed only where the caller accepts it).
    pub port: u16,
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Missing or unknown scheme.
    #[error("`{0}` needs a scheme: write tcp://HOST:PORT or udp://HOST:PORT")]
    Scheme(String),
    /// Missing port.
    #[error(
        "`{0}` has no port: write tcp://HOST:PORT or udp://HOST:PORT (IPv6 as tcp://[::1]:PORT)"
    )]
    Port(String),
    /// Bad port number.
    #[error("`{0}`: the port must be a number from 1 to 65535")]
    BadPort(String),
    /// Empty host.
    #[error("`{0}` has no host: write for example tcp://127.0.0.1:22")]
    Host(String),
    /// A scheme other than tcp and udp.
    #[error("`{input}`: the scheme {scheme}:// is not supported: peerport forwards raw ports, write tcp://HOST:PORT or udp://HOST:PORT (an HTTP service is tcp://HOST:80)")]
    Unsupported {
        /// What was given.
        input: String,
        /// Its scheme.
        scheme: String,
    },
    /// Path or other trailing parts.
    #[error("`{0}` has extra parts after the port: write only SCHEME://HOST:PORT")]
    Trailing(String),
}

impl FromStr for ForwardAddr {
    type Err = AddrError;
    fn from_str(input: &str) -> Result<Self, AddrError> {
        let s = input.trim();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| AddrError::Scheme(input.into()))?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(AddrError::Unsupported {
                    input: input.into(),
                    scheme: other.into(),
                })
            }
        };
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(AddrError::Trailing(input.into()));
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let (h, p) = after
                .split_once(']')
                .ok_or_else(|| AddrError::Port(input.into()))?;
            let p = p
                .strip_prefix(':')
                .ok_or_else(|| AddrError::Port(input.into()))?;
            (h, p)
        } else {
            let (h, p) = rest
                .rsplit_once(':')
                .ok_or_else(|| AddrError::Port(input.into()))?;
            if h.contains(':') {
                // bare IPv6 without brackets is ambiguous
                return Err(AddrError::Port(input.into()));
            }
            (h, p)
        };
        if host.is_empty() {
            return Err(AddrError::Host(input.into()));
        }
        let port: u16 = port.parse().map_err(|_| AddrError::BadPort(input.into()))?;
        Ok(ForwardAddr {
            protocol,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ForwardAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.protocol, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.protocol, self.host, self.port)
        }
    }
}

impl ForwardAddr {
    /// `host:port` suitable for `tokio::net::lookup_host`.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolve to every address the host name has (IP literals resolve to themselves).
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.host_port()).await?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolved to no addresses", self.host),
            ));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_good() {
        let a: ForwardAddr = "tcp://127.0.0.1:22".parse().unwrap();
        assert_eq!(
            (a.protocol, a.host.as_str(), a.port),
            (Protocol::Tcp, "127.0.0.1", 22)
        );
        let b: ForwardAddr = "UDP://[::1]:51820".parse().unwrap();
        assert_eq!(
            (b.protocol, b.host.as_str(), b.port),
            (Protocol::Udp, "::1", 51820)
        );
        assert_eq!(b.to_string(), "udp://[::1]:51820");
        let c: ForwardAddr = "tcp://localhost:0".parse().unwrap();
        assert_eq!(c.host_port(), "localhost:0");
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "127.0.0.1:22",
            "http://x:1",
            "tcp://x",
            "tcp://:22",
            "tcp://x:99999",
            "tcp://x:port",
            "tcp://::1:22",
            "tcp://x:22/path",
            "tcp://[::1]22",
            "",
        ] {
            assert!(bad.parse::<ForwardAddr>().is_err(), "{bad} accepted");
        }
    }
}
