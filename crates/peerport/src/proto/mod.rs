//! Wire formats, without IO: stream headers, UDP datagram frames and the
//! bookkeeping of resumable streams.
//!
//! Everything here works on byte slices so it is unit-tested (and fuzzable)
//! without sockets; the engine does the reading and writing.

pub mod close;
pub mod datagram;
pub mod header;
pub mod resume;
pub mod tlv;
pub mod want;

use std::fmt;

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
