//! The hard-NAT punch's formats, without IO and outside the `ice`
//! feature (so the fuzz targets, which build the library without its
//! network stacks, reach them): the hint line in a blob ([`hint`]) and
//! the punch's STUN messages ([`wire`]). The punch itself is
//! `modes::ice::hardnat`.

pub mod hint;
pub mod wire;
