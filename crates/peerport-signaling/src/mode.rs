//! The signaling modes and their command-line names.

use std::{fmt, str::FromStr};

/// A signaling back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// iroh discovery (pkarr/DNS/mDNS) with a persistent identity.
    Iroh,
    /// iroh QUIC with copy-paste offer/answer.
    IrohManual,
    /// Full ICE plus quinn with copy-paste offer/answer.
    Ice,
    /// Full ICE plus quinn, signaled over Nostr relays.
    Nostr,
}

/// A mode name that peerport does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode `{0}`: use one of iroh (iroh-default), iroh-manual, ice (custom), nostr")]
pub struct UnknownMode(pub String);

impl Mode {
    /// Every mode, in the order help texts list them.
    pub const ALL: [Mode; 4] = [Mode::Iroh, Mode::IrohManual, Mode::Ice, Mode::Nostr];

    /// The other name the mode answers to, if any.
    pub fn alias(self) -> Option<&'static str> {
        match self {
            Mode::Iroh => Some("iroh-default"),
            Mode::Ice => Some("custom"),
            Mode::IrohManual | Mode::Nostr => None,
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Iroh => "iroh",
            Mode::IrohManual => "iroh-manual",
            Mode::Ice => "ice",
            Mode::Nostr => "nostr",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == name || m.alias() == Some(name.as_str()))
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_parse() {
        assert_eq!("iroh-default".parse::<Mode>().unwrap(), Mode::Iroh);
        assert_eq!("custom".parse::<Mode>().unwrap(), Mode::Ice);
        assert_eq!(" Nostr ".parse::<Mode>().unwrap(), Mode::Nostr);
        assert!("tor".parse::<Mode>().is_err());
    }

    #[test]
    fn roundtrip_names() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        }
    }
}
