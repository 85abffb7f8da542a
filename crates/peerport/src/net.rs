//! Socket helpers.

use std::{net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use tokio::net::{TcpStream, UdpSocket};

/// UDP socket buffer size: a 500 Mbit/s burst over ~60 ms.
pub const UDP_BUFFER: usize = 4 << 20;

/// Bind a non-blocking UDP socket with large buffers.
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    // The kernel may clamp these to net.core.{r,w}mem_max; that is not an error.
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

#[cfg(feature = "ice")]
/// Enlarge the buffers of an existing UDP socket (best effort).
pub fn tune_udp(sock: &std::net::UdpSocket) -> std::io::Result<()> {
    let s = socket2::SockRef::from(sock);
    s.set_recv_buffer_size(UDP_BUFFER)?;
    s.set_send_buffer_size(UDP_BUFFER)
}

/// An unconnected UDP socket on the wildcard address of `peer`'s family,
/// connected to `peer`.
pub async fn udp_socket_to(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = udp_socket(local)?;
    s.connect(peer).await?;
    Ok(s)
}

/// Connect to the first of `addrs` that answers, each within `timeout`.
pub async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut errors = Vec::new();
    for a in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => errors.push(format!("{a}: {e}")),
            Err(_) => errors.push(format!("{a}: timed out after {timeout:?}")),
        }
    }
    Err(errors.join("; "))
}

#[cfg(feature = "iroh")]
/// Whether `addr` is something a socket bound to `bind` may advertise: the
/// same IP, or (for an unspecified bind) the same address family.
pub fn within_bind(bind: SocketAddr, addr: SocketAddr) -> bool {
    if bind.ip().is_unspecified() {
        bind.is_ipv4() == addr.is_ipv4()
    } else {
        bind.ip() == addr.ip()
    }
}

/// Whether this host no longer has the address `ip` (renumbered, interface
/// gone): a socket can no longer be bound to it.
pub fn address_gone(ip: std::net::IpAddr) -> bool {
    !ip.is_unspecified()
        && matches!(
            std::net::UdpSocket::bind((ip, 0)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable
        )
}

#[cfg(any(feature = "iroh", feature = "nostr"))]
/// The local address the kernel would send from to reach `to` (a
/// connected UDP socket sends nothing), or `None` without a route.
pub fn route_source(to: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let any: std::net::SocketAddr = match to {
        std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(to).ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// Resolves when this host has lost `ip` (polled every second); the
/// reason, for the log.
pub async fn watch_address(ip: std::net::IpAddr) -> String {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if address_gone(ip) {
            return format!("this host no longer has the address {ip} the path used (renumbered?)");
        }
    }
}

/// The local addresses this host sends from towards some servers, to
/// notice when they change (renumbered, or another interface took over).
#[cfg(feature = "nostr")]
pub struct RouteWatch {
    targets: Vec<std::net::SocketAddr>,
    sources: Vec<Option<std::net::IpAddr>>,
    /// One poll a second however often [`RouteWatch::changed`] is called
    /// again (it sits in a `select!` loop that also wakes for messages).
    tick: tokio::time::Interval,
}

#[cfg(feature = "nostr")]
impl RouteWatch {
    /// Watch the routes towards `targets`, as they are now.
    pub fn new(targets: Vec<std::net::SocketAddr>) -> Self {
        let sources = targets.iter().map(|t| route_source(*t)).collect();
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        RouteWatch {
            targets,
            sources,
            tick,
        }
    }

    /// Resolves (polled every second) when the source address towards a
    /// target changed; the change, for the log. Never, without targets.
    /// Cancel-safe.
    pub async fn changed(&mut self) -> String {
        if self.targets.is_empty() {
            return std::future::pending().await;
        }
        loop {
            self.tick.tick().await;
            for (t, was) in self.targets.iter().zip(self.sources.iter_mut()) {
                let now = route_source(*t);
                if now != *was {
                    let show = |ip: &Option<std::net::IpAddr>| {
                        ip.map_or_else(|| "no route".to_string(), |ip| ip.to_string())
                    };
                    let change = format!(
                        "the way to {t} now leaves from {} (was {})",
                        show(&now),
                        show(was)
                    );
                    *was = now;
                    return change;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{address_gone, within_bind};

    #[test]
    fn an_address_this_host_lacks_is_gone() {
        assert!(!address_gone("127.0.0.1".parse().unwrap()));
        assert!(!address_gone("0.0.0.0".parse().unwrap()));
        // TEST-NET-1: on no interface of a test machine
        assert!(address_gone("192.0.2.77".parse().unwrap()));
    }

    #[test]
    fn the_route_to_loopback_leaves_from_loopback() {
        let to = "127.0.0.1:9".parse().unwrap();
        assert_eq!(super::route_source(to), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn advertise_only_what_is_bound() {
        let a = |s: &str| s.parse().unwrap();
        assert!(within_bind(a("127.0.0.1:0"), a("127.0.0.1:5000")));
        assert!(!within_bind(a("127.0.0.1:0"), a("10.0.0.2:5000")));
        assert!(!within_bind(a("[::1]:0"), a("127.0.0.1:5000")));
        assert!(within_bind(a("[::1]:0"), a("[::1]:5000")));
        assert!(within_bind(a("0.0.0.0:0"), a("10.0.0.2:5000")));
        assert!(!within_bind(a("0.0.0.0:0"), a("[2001:db8::1]:5000")));
    }
}
