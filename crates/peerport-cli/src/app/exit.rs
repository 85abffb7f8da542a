//! Exit codes a wrapper can rely on (also in the README), and how errors
//! are printed.

use peerport::{identity, receiver::ReceiverError};

use crate::settings;

/// Clean end.
pub const OK: u8 = 0;
/// A failure not listed below.
pub const FAILURE: u8 = 1;
/// Bad usage: a flag, config file or key that must be fixed.
pub const USAGE: u8 = 2;
/// The sender could not be reached, or reconnecting gave up.
pub const UNREACHABLE: u8 = 3;
/// The sender refused this receiver (token, allowed peers, protocol, full).
pub const REFUSED: u8 = 4;

/// The exit code for an error from [`super::run`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<ReceiverError>() {
            return match r {
                ReceiverError::Refused(_) => REFUSED,
                ReceiverError::Fatal(_) => FAILURE,
                _ => UNREACHABLE,
            };
        }
        if cause.downcast_ref::<settings::ConfigError>().is_some()
            || cause.downcast_ref::<identity::IdentityError>().is_some()
        {
            return USAGE;
        }
    }
    FAILURE
}

/// An error with its causes, each said once (a cause whose text the
/// message already contains is not repeated).
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
