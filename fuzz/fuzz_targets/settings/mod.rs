//! The `peerport` command's config and network file parsers, compiled
//! from its sources (crates/peerport-cli/src/settings: declare.rs,
//! file.rs, network.rs as they are, table.rs through build.rs), with the
//! few items of its settings/mod.rs they use. The CLI is a binary crate
//! over the whole library with iroh; this keeps the sanitizer build small.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use peerport_signaling::Mode;

#[path = "../../../crates/peerport-cli/src/settings/declare.rs"]
pub mod declare;
#[path = "../../../crates/peerport-cli/src/settings/file.rs"]
pub mod file;
#[path = "../../../crates/peerport-cli/src/settings/network.rs"]
pub mod network;
pub mod table {
    include!(concat!(env!("OUT_DIR"), "/settings_table.rs"));
}

pub use declare::Role;
pub use file::ConfigError;
pub use table::{Partial, SETTINGS};

// as in crates/peerport-cli/src/settings/mod.rs (help texts only)
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RECONNECT_WAIT: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// What the settings table takes from `peerport::modes::iroh`, a module
/// of the library's `iroh` feature (help texts only; see build.rs).
pub mod iroh_defaults {
    pub const DEFAULT_RELAY_QUIC_PORT: u16 = 7842;
    pub const BBR_WINDOWS: (u64, u64) = (2 << 20, 8 << 20);
}

/// As in crates/peerport-cli/src/settings/mod.rs: whether the setting
/// `name` (field or key) belongs to `role` in `mode`.
pub fn applies(name: &str, role: Role, mode: Mode) -> bool {
    let field = name.replace('-', "_");
    SETTINGS
        .iter()
        .any(|s| s.field == field && s.scope.applies(role, mode))
}

pub const ROLES: [Role; 2] = [Role::Sender, Role::Receiver];
