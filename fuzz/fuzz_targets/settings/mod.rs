//! The `peerport` command's config and network file parsers, compiled
//! from its sources (crates/peerport-cli/src/settings: declare.rs,
//! file.rs, network.rs as they are, table.rs through build.rs), exported
//! as its settings/mod.rs does. The CLI is a binary crate over the whole
//! library with iroh; this keeps the sanitizer build small.
#![allow(dead_code, unused_imports)]

#[path = "../../../crates/peerport-cli/src/settings/declare.rs"]
pub mod declare;
#[path = "../../../crates/peerport-cli/src/settings/file.rs"]
pub mod file;
#[path = "../../../crates/peerport-cli/src/settings/network.rs"]
pub mod network;
pub mod table {
    include!(concat!(env!("OUT_DIR"), "/settings_table.rs"));
}

pub use declare::{
    applies, Role, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_RECONNECT_WAIT,
};
pub use file::ConfigError;
pub use table::{Partial, SETTINGS};
