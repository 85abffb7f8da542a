//! The receiver's local listener (`--target`), bound before any network work
//! so a busy port fails fast with a clear message.

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

use crate::{
    addr::{ForwardAddr, Protocol},
    net,
};

/// A bound `--target`.
#[derive(Debug)]
pub enum BoundTarget {
    /// Accepts TCP clients.
    Tcp(TcpListener),
    /// Receives UDP packets from clients.
    Udp(UdpSocket),
}

/// Why the target could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Host did not resolve.
    #[error("cannot resolve --target host `{host}`: {source}")]
    Resolve {
        /// Host name.
        host: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Port in use.
    #[error(
        "--target {addr} is already in use: stop whatever listens there or choose another port"
    )]
    InUse {
        /// Address.
        addr: String,
    },
    /// Other bind failure.
    #[error("cannot listen on --target {addr}: {source} (ports below 1024 need root; the address must be local)")]
    Other {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl BoundTarget {
    /// Bind the listener for `target` (first resolved address).
    pub async fn bind(target: &ForwardAddr) -> Result<Self, BindError> {
        let addrs = target
            .resolve()
            .await
            .map_err(|source| BindError::Resolve {
                host: target.host.clone(),
                source,
            })?;
        let addr = addrs[0];
        let map = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                BindError::InUse {
                    addr: target.to_string(),
                }
            } else {
                BindError::Other {
                    addr: target.to_string(),
                    source,
                }
            }
        };
        Ok(match target.protocol {
            Protocol::Tcp => BoundTarget::Tcp(tcp_listener(addr).map_err(map)?),
            Protocol::Udp => BoundTarget::Udp(net::udp_socket(addr).map_err(map)?),
        })
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        match self {
            BoundTarget::Tcp(_) => Protocol::Tcp,
            BoundTarget::Udp(_) => Protocol::Udp,
        }
    }

    /// The actual local address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            BoundTarget::Tcp(l) => l.local_addr(),
            BoundTarget::Udp(s) => s.local_addr(),
        }
    }
}

/// Listen backlog: bursts of a thousand clients connecting at once must not
/// lose SYNs (tokio's default is 128). The kernel caps it at
/// `net.core.somaxconn` (4096 on current kernels).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on exactly `addr` with [`LISTEN_BACKLOG`].
fn tcp_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // like std and tokio's bind: a restarted receiver can take its port back at once
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}
