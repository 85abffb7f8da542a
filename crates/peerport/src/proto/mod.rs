//! Wire formats, without IO: stream headers, UDP datagram frames and the
//! bookkeeping of resumable streams.
//!
//! Everything here works on byte slices so it is unit-tested (and fuzzable)
//! without sockets; the engine does the reading and writing.

pub mod datagram;
pub mod header;
pub mod resume;
