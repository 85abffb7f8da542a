//! How a NAT picks the external port of a new mapping (sans-IO).
//!
//! netcheck creates mappings one after the other (new sockets, and for an
//! endpoint-dependent NAT new destinations) and notes each local port and
//! the external port a STUN server saw. A NAT that keeps the local port is
//! *preserving*; one whose ports move by a small step of one sign is
//! *sequential* (the next mapping is predictable: the cheap case of a
//! hard-NAT punch); any other is *random*.

use serde::Serialize;

/// The largest step between consecutive mappings still taken as
/// sequential: other flows through the NAT take ports in between. Three
/// random steps this small in a row happen about once in 10^8.
pub const MAX_STEP: u16 = 16;

/// Port allocation behaviour of a NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PortAllocation {
    /// The external port is the local port.
    Preserving,
    /// Each new mapping takes a port a small step from the last.
    Sequential {
        /// The smallest step seen, with its sign.
        step: i32,
    },
    /// Neither.
    Random,
    /// Fewer than three mappings seen.
    Unknown,
}

impl PortAllocation {
    /// In words, for the text report.
    pub fn words(self) -> String {
        match self {
            PortAllocation::Preserving => "preserving (the external port is the local port)".into(),
            PortAllocation::Sequential { step } => {
                format!("sequential (each new mapping {step:+} from the last: predictable)")
            }
            PortAllocation::Random => {
                "random (each new mapping takes an unpredictable port)".into()
            }
            PortAllocation::Unknown => {
                "unknown (needs three mappings seen by a STUN server)".into()
            }
        }
    }
}

/// Classify from `(local port, external port)` of each new mapping, in
/// the order they were made.
pub fn classify(mappings: &[(u16, u16)]) -> PortAllocation {
    if mappings.len() < 3 {
        return PortAllocation::Unknown;
    }
    if mappings.iter().all(|(local, external)| local == external) {
        return PortAllocation::Preserving;
    }
    let steps: Vec<i32> = mappings
        .windows(2)
        .map(|w| i32::from(w[1].1) - i32::from(w[0].1))
        .collect();
    let one_sign = steps.iter().all(|&s| s > 0) || steps.iter().all(|&s| s < 0);
    let small = steps
        .iter()
        .all(|s| s.unsigned_abs() <= u32::from(MAX_STEP));
    match steps.iter().min_by_key(|s| s.unsigned_abs()) {
        Some(&step) if one_sign && small => PortAllocation::Sequential { step },
        _ => PortAllocation::Random,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserving_sequential_random() {
        assert_eq!(
            classify(&[(5000, 5000), (5001, 5001)]),
            PortAllocation::Unknown
        );
        assert_eq!(
            classify(&[(5000, 5000), (6000, 6000), (7000, 7000)]),
            PortAllocation::Preserving
        );
        // a global counter, one step per mapping; or with other flows between
        assert_eq!(
            classify(&[(5000, 30000), (5000, 30001), (6000, 30002), (7000, 30003)]),
            PortAllocation::Sequential { step: 1 }
        );
        assert_eq!(
            classify(&[(5000, 30000), (6000, 30004), (7000, 30005)]),
            PortAllocation::Sequential { step: 1 }
        );
        assert_eq!(
            classify(&[(5000, 40010), (6000, 40008), (7000, 40006)]),
            PortAllocation::Sequential { step: -2 }
        );
        // a step of each sign, a repeated port, a jump: random
        assert_eq!(
            classify(&[(5000, 30000), (6000, 30002), (7000, 30001)]),
            PortAllocation::Random
        );
        assert_eq!(
            classify(&[(5000, 30000), (6000, 30000), (7000, 30001)]),
            PortAllocation::Random
        );
        assert_eq!(
            classify(&[(5000, 30000), (6000, 41234), (7000, 2345)]),
            PortAllocation::Random
        );
        // preserving for the first mapping only: judged by the steps
        assert_eq!(
            classify(&[(5000, 5000), (5000, 5001), (6000, 5002)]),
            PortAllocation::Sequential { step: 1 }
        );
    }

    #[test]
    fn words_say_what_it_means() {
        assert!(PortAllocation::Sequential { step: 1 }
            .words()
            .contains("+1"));
        assert!(PortAllocation::Random.words().starts_with("random"));
    }
}
