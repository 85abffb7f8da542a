//! What happens to a session, as [`Event`]s, and how durations read.

use serde::{Deserialize, Serialize};

use crate::transport::PathKind;

/// Something that happened to a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Session id.
    pub session: u64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A connection serves the session (new, or after a loss).
    Up {
        /// The path.
        path: String,
        /// Direct or relay.
        kind: PathKind,
        /// How long it took, in milliseconds. A receiver's new session:
        /// from the start of its attempts (process start, or the end of
        /// the session before) to the connection. A connection that
        /// replaces a lost one: the outage, from the last packet heard
        /// over the lost connection to the new one. Absent for a sender's
        /// new session (it does not know when the receiver began).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_ms: Option<u64>,
        /// The session's connections so far (1 for a new session).
        connection: u64,
    },
    /// The session's packets take another path.
    Path {
        /// The new path.
        path: String,
        /// Direct or relay.
        kind: PathKind,
    },
    /// Nothing was heard from the peer for longer than keep-alives allow:
    /// the peer or the path may be gone (the connection is not closed
    /// yet).
    Stale {
        /// Milliseconds since the peer was last heard.
        silent_ms: u64,
    },
    /// The peer was heard again after the session went stale.
    Heard {
        /// How long it was silent, milliseconds.
        silent_ms: u64,
    },
    /// The session lost its connection (it may come back).
    Lost,
    /// The session ended.
    Ended,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.session;
        match &self.kind {
            EventKind::Up {
                path,
                after_ms,
                connection,
                ..
            } => {
                let what = if *connection <= 1 {
                    "up"
                } else {
                    "reconnected"
                };
                write!(f, "session {s} {what} over {path}")?;
                match (after_ms, *connection <= 1) {
                    (Some(ms), true) => write!(f, " after {}", took(*ms)),
                    (Some(ms), false) => write!(f, " after an outage of {}", took(*ms)),
                    (None, _) => Ok(()),
                }
            }
            EventKind::Path { path, .. } => write!(f, "session {s} path now {path}"),
            EventKind::Stale { silent_ms } => write!(
                f,
                "session {s} stale: nothing heard from the peer for {}",
                took(*silent_ms)
            ),
            EventKind::Heard { silent_ms } => write!(
                f,
                "session {s} hears the peer again after {} of silence",
                took(*silent_ms)
            ),
            EventKind::Lost => write!(f, "session {s} lost its connection"),
            EventKind::Ended => write!(f, "session {s} ended"),
        }
    }
}

/// A measured duration: "2 ms", "936 ms", "4.21 s" below 10 s, then as
/// [`secs`].
pub fn took(ms: u64) -> String {
    match ms {
        ..1000 => format!("{ms} ms"),
        1000..10_000 => format!("{:.2} s", ms as f64 / 1000.0),
        _ => secs(ms as f64 / 1000.0),
    }
}

/// "4.2 s", "3m07s", "2h05m", "3d04h".
pub fn secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let t = s as u64;
    match t {
        ..3600 => format!("{}m{:02}s", t / 60, t % 60),
        3600..86400 => format!("{}h{:02}m", t / 3600, t % 3600 / 60),
        _ => format!("{}d{:02}h", t / 86400, t % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_ms_below_a_second_and_with_centiseconds_below_ten() {
        assert_eq!(took(2), "2 ms");
        assert_eq!(took(936), "936 ms");
        assert_eq!(took(4210), "4.21 s");
        assert_eq!(took(40_400), "40.4 s");
        assert_eq!(took(187_000), "3m07s");
    }

    #[test]
    fn events_say_what_was_measured() {
        let up = |after_ms, connection| Event {
            at_ms: 0,
            session: 1,
            kind: EventKind::Up {
                path: "direct 10.0.0.2:4433".into(),
                kind: PathKind::Direct,
                after_ms,
                connection,
            },
        };
        assert_eq!(
            up(Some(2), 1).to_string(),
            "session 1 up over direct 10.0.0.2:4433 after 2 ms"
        );
        assert_eq!(
            up(None, 1).to_string(),
            "session 1 up over direct 10.0.0.2:4433"
        );
        assert_eq!(
            up(Some(40_400), 2).to_string(),
            "session 1 reconnected over direct 10.0.0.2:4433 after an outage of 40.4 s"
        );
    }
}
