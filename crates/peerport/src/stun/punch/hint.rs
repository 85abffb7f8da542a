//! The punch hint (sans-IO): one extra line among a blob's ICE candidates
//! that tells the peer how this side's NAT maps and allocates ports, and
//! where its punch socket can be reached:
//!
//! `x-peerport-punch 1 <eim|edm> <public ip> <port> <preserving|seq:+N|seq:-N|random|unknown>`
//!
//! webrtc-ice ignores a candidate line it cannot parse (with a warning),
//! so older peers keep working; this code takes the line out before ICE
//! sees it.

use std::net::IpAddr;

use crate::stun::allocation::PortAllocation;

/// The first word of a hint line.
pub const PREFIX: &str = "x-peerport-punch";
/// The start of every line of peerport's own among a blob's candidates.
pub const OWN_LINES: &str = "x-peerport-";
/// The hint format this code writes and reads.
const VERSION: &str = "1";

/// How a NAT maps, as far as the punch cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One external port for every destination (or no NAT).
    Independent,
    /// A new external port per destination ("symmetric").
    Dependent,
}

/// One side's hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// How its NAT maps.
    pub mapping: Mapping,
    /// Its public address.
    pub public: IpAddr,
    /// Endpoint-independent: the punch socket's external port. Dependent:
    /// the last external port seen, where a sequential allocator goes on.
    pub port: u16,
    /// How its NAT allocates ports.
    pub allocation: PortAllocation,
}

/// A hint line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable punch hint `{line}`: {why}")]
pub struct HintError {
    line: String,
    why: &'static str,
}

impl Hint {
    /// The candidate line.
    pub fn line(&self) -> String {
        let mapping = match self.mapping {
            Mapping::Independent => "eim",
            Mapping::Dependent => "edm",
        };
        let allocation = match self.allocation {
            PortAllocation::Preserving => "preserving".to_string(),
            PortAllocation::Sequential { step } => format!("seq:{step:+}"),
            PortAllocation::Random => "random".to_string(),
            PortAllocation::Unknown => "unknown".to_string(),
        };
        format!(
            "{PREFIX} {VERSION} {mapping} {} {} {allocation}",
            self.public, self.port
        )
    }

    /// `None` for a line that is no hint (an ICE candidate); a hint of a
    /// later version is no hint either.
    pub fn parse(line: &str) -> Option<Result<Hint, HintError>> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some(PREFIX) {
            return None;
        }
        if words.next() != Some(VERSION) {
            return None;
        }
        let err = |why| HintError {
            line: line.chars().take(120).collect(),
            why,
        };
        let mut parse = || {
            let mapping = match words.next() {
                Some("eim") => Mapping::Independent,
                Some("edm") => Mapping::Dependent,
                _ => return Err(err("mapping must be eim or edm")),
            };
            let public = words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| err("no public IP address"))?;
            let port = words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| err("no port"))?;
            let allocation = match words.next() {
                Some("preserving") => PortAllocation::Preserving,
                Some("random") => PortAllocation::Random,
                Some("unknown") => PortAllocation::Unknown,
                Some(w) => match w.strip_prefix("seq:").map(str::parse::<i32>) {
                    Some(Ok(step)) if step != 0 && step.unsigned_abs() <= 1024 => {
                        PortAllocation::Sequential { step }
                    }
                    _ => return Err(err("unknown port allocation")),
                },
                None => return Err(err("no port allocation")),
            };
            if words.next().is_some() {
                return Err(err("trailing words"));
            }
            Ok(Hint {
                mapping,
                public,
                port,
                allocation,
            })
        };
        Some(parse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for allocation in [
            PortAllocation::Preserving,
            PortAllocation::Sequential { step: 1 },
            PortAllocation::Sequential { step: -4 },
            PortAllocation::Random,
            PortAllocation::Unknown,
        ] {
            let h = Hint {
                mapping: Mapping::Dependent,
                public: "198.18.0.12".parse().unwrap(),
                port: 20004,
                allocation,
            };
            assert_eq!(Hint::parse(&h.line()), Some(Ok(h)), "{}", h.line());
        }
        let line = "x-peerport-punch 1 eim 2001:db8::1 443 preserving";
        assert_eq!(
            Hint::parse(line).unwrap().unwrap().public,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn other_lines_and_bad_hints() {
        let cand = "candidate:1 1 udp 2130706431 10.0.1.2 40000 typ host";
        assert_eq!(Hint::parse(cand), None);
        assert_eq!(Hint::parse("x-peerport-punch 2 eim 1.2.3.4 5 random"), None);
        for bad in [
            "x-peerport-punch 1",
            "x-peerport-punch 1 cone 1.2.3.4 5 random",
            "x-peerport-punch 1 eim 1.2.3 5 random",
            "x-peerport-punch 1 eim 1.2.3.4 70000 random",
            "x-peerport-punch 1 eim 1.2.3.4 5 seq:0",
            "x-peerport-punch 1 eim 1.2.3.4 5 seq:+99999",
            "x-peerport-punch 1 eim 1.2.3.4 5 sometimes",
            "x-peerport-punch 1 eim 1.2.3.4 5 random extra",
        ] {
            assert!(matches!(Hint::parse(bad), Some(Err(_))), "{bad}");
        }
    }
}
