//! Direct paths through one symmetric NAT (issue 27): a bounded
//! birthday-paradox punch beside ICE, as Tailscale does. The side behind
//! the endpoint-dependent NAT (hard) opens many sockets towards the
//! other's punch socket; the side behind the endpoint-independent one
//! (easy) probes the hard side's ports, the predicted ones first.
//!
//! * [`gather`]: each side learns its hint beside ICE's gathering; the
//!   hint goes into its blob as one more candidate line ([`hint`]).
//! * [`plan`]: from both hints, whether to punch and as which side.
//! * [`attempt`]: one punch as a task; [`driver`] runs the state machine
//!   ([`machine`]: the messages of [`wire`], the probe order and rate of
//!   [`schedule`]) over real sockets.
//! * [`pinned`]: quinn's socket on the punched 5-tuple, once the
//!   connection moves there (the `ice` module's `upgrade`).
//!
//! The design and its measurements: docs/research/hard-nat.md.

use std::net::IpAddr;

pub mod attempt;
pub mod driver;
pub mod gather;
pub mod machine;
pub mod pinned;
pub mod schedule;

pub use crate::stun::punch::{hint, wire};

use hint::{Hint, Mapping};

/// This side's part in a punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Behind the endpoint-dependent NAT: many sockets towards the peer.
    Hard,
    /// Behind the endpoint-independent NAT: probes towards the hard side's ports.
    Easy,
}

/// Whether to punch, and as which side, from both hints; both sides get
/// the same answer from the same two blobs. No punch when either hint is
/// missing, when both NATs map alike (ICE already goes direct through two
/// cone NATs; two symmetric ones need far more probes than the bounds
/// allow), across address families, behind one public address, or
/// towards a private one.
pub fn plan(mine: Option<&Hint>, peer: Option<&Hint>) -> Option<Side> {
    let (mine, peer) = (mine?, peer?);
    let public = |ip: IpAddr| !super::remote_filter::is_private(ip) && !ip.is_multicast();
    if mine.public.is_ipv4() != peer.public.is_ipv4()
        || mine.public == peer.public
        || !public(peer.public)
        || !public(mine.public)
    {
        return None;
    }
    match (mine.mapping, peer.mapping) {
        (Mapping::Dependent, Mapping::Independent) => Some(Side::Hard),
        (Mapping::Independent, Mapping::Dependent) => Some(Side::Easy),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::allocation::PortAllocation;

    fn h(mapping: Mapping, ip: &str) -> Hint {
        Hint {
            mapping,
            public: ip.parse().unwrap(),
            port: 20000,
            allocation: PortAllocation::Random,
        }
    }

    #[test]
    fn who_punches() {
        let cone = h(Mapping::Independent, "198.18.0.11");
        let sym = h(Mapping::Dependent, "198.18.0.12");
        assert_eq!(plan(Some(&sym), Some(&cone)), Some(Side::Hard));
        assert_eq!(plan(Some(&cone), Some(&sym)), Some(Side::Easy));
        assert_eq!(plan(Some(&cone), Some(&cone)), None);
        assert_eq!(
            plan(Some(&sym), Some(&h(Mapping::Dependent, "198.18.0.13"))),
            None
        );
        assert_eq!(plan(None, Some(&sym)), None);
        assert_eq!(plan(Some(&cone), None), None);
        // one public address, a private peer, mixed families: no punch
        assert_eq!(
            plan(Some(&h(Mapping::Independent, "198.18.0.12")), Some(&sym)),
            None
        );
        assert_eq!(
            plan(Some(&cone), Some(&h(Mapping::Dependent, "10.0.2.2"))),
            None
        );
        assert_eq!(
            plan(Some(&cone), Some(&h(Mapping::Dependent, "2001:db8::2"))),
            None
        );
    }
}
