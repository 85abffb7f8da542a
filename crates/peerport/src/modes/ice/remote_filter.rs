//! Which of the peer's host candidates to pair with when a TURN relay is in
//! use.
//!
//! webrtc-ice pairs every local candidate with every remote one, so our TURN
//! relay candidate also sends connectivity checks to the peer's private host
//! addresses (10.x, 192.168.x, ...). A TURN server cannot reach those, and
//! coturn closes the whole allocation on the first failed send to a peer
//! (`udp send: Network is unreachable`, then `closed (2nd stage) ... reason:
//! general`): the relay dies a second after it was made and the session has
//! no fallback. So a private host address of the peer is only paired with
//! when it lies on one of our own networks (a shared LAN or loopback);
//! public host addresses, and server-reflexive, peer-reflexive and relay
//! candidates, are always used.

use std::net::IpAddr;

/// An address and netmask of a local interface.
pub type LocalNet = (IpAddr, IpAddr);

/// This host's interface networks (empty if they cannot be read).
pub fn local_networks() -> Vec<LocalNet> {
    webrtc_util::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| Some((i.addr?.ip(), i.mask?.ip())))
        .collect()
}

/// Addresses that only mean something inside a private network.
pub(super) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, CGNAT
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

fn same_network(ip: IpAddr, (addr, mask): LocalNet) -> bool {
    match (ip, addr, mask) {
        (IpAddr::V4(i), IpAddr::V4(a), IpAddr::V4(m)) => {
            let m = u32::from(m);
            m != 0 && u32::from(i) & m == u32::from(a) & m
        }
        (IpAddr::V6(i), IpAddr::V6(a), IpAddr::V6(m)) => {
            let m = u128::from(m);
            m != 0 && u128::from(i) & m == u128::from(a) & m
        }
        _ => false,
    }
}

/// Whether to pair with the peer's host candidate at `ip`.
pub fn reachable_host(ip: IpAddr, local: &[LocalNet]) -> bool {
    !is_private(ip) || local.iter().any(|n| same_network(ip, *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_hosts_only_on_our_networks() {
        let nets = vec![
            (ip("127.0.0.1"), ip("255.0.0.0")),
            (ip("10.0.1.2"), ip("255.255.255.0")),
            (ip("fe80::1"), ip("ffff:ffff:ffff:ffff::")),
        ];
        assert!(reachable_host(ip("203.0.113.7"), &nets));
        assert!(reachable_host(ip("198.18.0.12"), &nets));
        assert!(reachable_host(ip("2001:db8::5"), &nets));
        assert!(reachable_host(ip("127.0.0.1"), &nets));
        assert!(reachable_host(ip("10.0.1.77"), &nets));
        assert!(!reachable_host(ip("10.0.2.2"), &nets));
        assert!(!reachable_host(ip("192.168.1.5"), &nets));
        assert!(!reachable_host(ip("100.64.1.2"), &nets));
        assert!(reachable_host(ip("fe80::9"), &nets));
        assert!(!reachable_host(ip("fd00::9"), &nets));
        assert!(!reachable_host(ip("10.0.2.2"), &[]));
    }

    #[test]
    fn reads_local_networks() {
        // loopback is always there
        assert!(local_networks().iter().any(|(a, _)| a.is_loopback()));
    }
}
