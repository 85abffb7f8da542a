//! Wire formats, without IO: stream headers and UDP datagram frames.
//!
//! Everything here works on byte slices so it is unit-tested (and fuzzable)
//! without sockets; the engine does the reading and writing.

pub mod datagram;
pub mod header;
