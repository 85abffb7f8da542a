//! The modes the CLI knows, one registration line each: the mode's name,
//! its settings type (which implements [`peerport::modes::Mode`]) and the
//! function that builds it from merged settings. The [`ModeSettings`] enum
//! and the dispatch to generic code ([`ModeSettings::visit`]) follow.

use std::time::Duration;

use peerport::modes::{
    ice::IcePath, iroh::Secret, iroh_manual::IrohManualPath, IrohMode, ManualMode, Mode, NostrMode,
};

use super::{
    validate::{allowed_peers, iroh_options, nostr_config, path_settings, peer_spec},
    ConfigError, Partial, Role,
};

/// Code that runs any mode: [`ModeSettings::visit`] calls it with the
/// mode's settings, typed.
pub trait ModeVisitor<'a> {
    /// What the visit returns.
    type Out;
    /// Run with mode `M`'s settings.
    fn visit<M: Mode>(self, mode: &'a M) -> Self::Out;
}

macro_rules! modes {
    ($($variant:ident($ty:ty) = $build:ident),* $(,)?) => {
        /// The settings only one mode has: the mode's own settings type.
        #[derive(Debug, Clone)]
        #[allow(clippy::large_enum_variant, reason = "one value per process")]
        pub enum ModeSettings {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant($ty),
            )*
        }

        impl ModeSettings {
            /// Build `mode`'s settings for `role`.
            pub(super) fn build(
                mode: peerport_signaling::Mode,
                p: &Partial,
                role: Role,
                connect_timeout: Duration,
            ) -> Result<Self, ConfigError> {
                Ok(match mode {
                    $(peerport_signaling::Mode::$variant => {
                        ModeSettings::$variant($build(p, role, connect_timeout)?)
                    })*
                })
            }

            /// Run `v` with this mode's settings.
            pub fn visit<'a, V: ModeVisitor<'a>>(&'a self, v: V) -> V::Out {
                match self {
                    $(ModeSettings::$variant(m) => v.visit(m),)*
                }
            }
        }
    };
}

modes! {
    Iroh(IrohMode) = iroh,
    IrohManual(ManualMode<IrohManualPath>) = iroh_manual,
    Ice(ManualMode<IcePath>) = ice,
    Nostr(NostrMode) = nostr,
}

fn iroh(p: &Partial, role: Role, _: Duration) -> Result<IrohMode, ConfigError> {
    Ok(IrohMode {
        secret: p.secret_file.clone().map(Secret::File).unwrap_or_default(),
        options: iroh_options(p)?,
        allowed_peers: allowed_peers(p)?,
        peer: match role {
            Role::Sender => None,
            Role::Receiver => Some(peer_spec(p)?),
        },
    })
}

fn iroh_manual(
    p: &Partial,
    _: Role,
    connect_timeout: Duration,
) -> Result<ManualMode<IrohManualPath>, ConfigError> {
    let s = path_settings(p, connect_timeout)?;
    Ok(s.manual(s.iroh_manual_path()))
}

fn ice(
    p: &Partial,
    _: Role,
    connect_timeout: Duration,
) -> Result<ManualMode<IcePath>, ConfigError> {
    let s = path_settings(p, connect_timeout)?;
    Ok(s.manual(s.ice_path()))
}

fn nostr(p: &Partial, _: Role, connect_timeout: Duration) -> Result<NostrMode, ConfigError> {
    Ok(NostrMode {
        ice: path_settings(p, connect_timeout)?.ice_path(),
        signaling: nostr_config(p)?,
    })
}
