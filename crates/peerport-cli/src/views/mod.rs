//! How a running sender or receiver shows what it does, each a view of one
//! [`peerport::status::Monitor`]: `peerport status` over a local
//! [`control`] socket, Prometheus [`metrics`], the [`web`] dashboard, and
//! the terminal's [`text`]. The HTTP ones are [`guard`]ed.

pub mod control;
pub mod guard;
pub mod metrics;
pub mod text;
pub mod web;
