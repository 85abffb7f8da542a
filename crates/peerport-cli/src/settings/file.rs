//! Configuration files: TOML with the same names as the long flags
//! (`relay-url = [..]`, `secret-file = ".."`, from the settings table), plus
//! `role` and `mode`, which must match the command, and a sender's
//! `[[service]]` tables. Unknown keys are errors that name the key; a key of
//! another role or mode is an error that says so.

use std::path::{Path, PathBuf};

use peerport_signaling::Mode;
use serde::{Deserialize, Serialize};

use super::{declare::Role, Partial};

/// Config-file selection, shared by every role and mode.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct ConfigArgs {
    /// Read settings from this TOML file (command-line flags win).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read ~/.config/peerport/sender.toml or receiver.toml.
    #[arg(long, conflicts_with = "config")]
    pub default_config: bool,
}

/// A sender's `[[service]]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceTable {
    /// The service's name (what receivers write before `=` in `--target`).
    pub name: String,
    /// Where its connections go: tcp://HOST:PORT or udp://HOST:PORT.
    pub source: String,
    /// Only these receiver ids may use it (mode iroh; absent: every
    /// receiver the sender admits).
    pub allowed_peer: Option<Vec<String>>,
    /// Start each TCP connection to the service with a PROXY protocol v2
    /// header, so it sees the receiver-side client's address.
    pub proxy_protocol: Option<bool>,
}

/// A string or a list of strings.
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// File unreadable.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML or unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// Parser message (names the key).
        message: String,
    },
    /// role/mode mismatch or foreign key.
    #[error("config file {path}: {message}")]
    Mismatch {
        /// Path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Missing or invalid setting after merging.
    #[error("{reason}")]
    Invalid {
        /// The setting at fault (its flag without `--`, its key in a
        /// config file), when one is.
        key: Option<&'static str>,
        /// What is wrong and what to do (naming the flag).
        reason: String,
    },
}

/// Parse a config file's text; an error says where (line and column).
pub fn parse(path: &str, text: &str) -> Result<Partial, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        let message = e.message().trim_end();
        let message = match unknown_key(message) {
            Some(key) => match closest_key(key) {
                Some(near) => format!("unknown key `{key}`: did you mean `{near}`?"),
                None => format!(
                    "unknown key `{key}`: `peerport config init --role ROLE --mode MODE` writes every key there is"
                ),
            },
            None => message.to_string(),
        };
        ConfigError::Parse {
            path: path.to_string(),
            message: format!("{at}{message}"),
        }
    })
}

/// The key of the parser's "unknown field `KEY`, expected one of ..." message.
fn unknown_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The setting whose key is nearest to `key` (a typo of it), if any is near.
fn closest_key(key: &str) -> Option<String> {
    let keys = super::SETTINGS
        .iter()
        .map(|s| s.key())
        .chain(["role", "mode", "service"].map(String::from));
    keys.map(|k| (strsim::jaro_winkler(key, &k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Read and parse a config file.
pub fn load(path: &Path) -> Result<Partial, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// `~/.config/peerport/<role>.toml` (honouring `XDG_CONFIG_HOME`).
pub fn default_path(role: Role) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(
        base.join("peerport")
            .join(format!("{}.toml", role.as_str())),
    )
}

/// Whether a setting (by its key) applies to `role` in `mode`.
pub fn key_applies(key: &str, role: Role, mode: Mode) -> bool {
    match key {
        "role" | "mode" => true,
        "service" => role == Role::Sender,
        _ => super::applies(key, role, mode),
    }
}

/// The keys a file or command line sets.
pub fn keys_set(p: &Partial) -> Vec<String> {
    match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Check that a file is meant for this command: `role` and `mode` match and
/// every key it sets belongs to this role and mode.
pub fn check_file(path: &str, file: &Partial, role: Role, mode: Mode) -> Result<(), ConfigError> {
    let mismatch = |message: String| ConfigError::Mismatch {
        path: path.to_string(),
        message,
    };
    if let Some(r) = &file.role {
        if r != role.as_str() {
            return Err(mismatch(format!(
                "role = \"{r}\" but this is the `{}` command: use a {} config file",
                role.as_str(),
                role.as_str()
            )));
        }
    }
    if let Some(m) = &file.mode {
        let got: Mode = m.parse().map_err(|e| mismatch(format!("{e}")))?;
        if mode != got {
            return Err(mismatch(format!(
                "mode = \"{m}\" but the command runs mode `{mode}`"
            )));
        }
    }
    if let Some(key) = keys_set(file)
        .into_iter()
        .find(|k| !key_applies(k, role, mode))
    {
        return Err(mismatch(format!(
            "key `{key}` is not a setting of the {} in mode {mode}: remove it (or use the config file of the right role and mode)",
            role.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_wins_file_fills_gaps() {
        let file = parse(
            "f",
            r#"
            role = "sender"
            mode = "iroh"
            source = "tcp://127.0.0.1:22"
            relay-url = ["http://a"]
            max-sessions = 3
            no-mdns = true
            "#,
        )
        .unwrap();
        let cli = Partial {
            source: Some(vec!["tcp://127.0.0.1:2200".into()]),
            max_sessions: Some(5),
            ..Default::default()
        };
        let m = Partial::overlay(file, cli);
        assert_eq!(m.source, Some(vec!["tcp://127.0.0.1:2200".to_string()]));
        assert_eq!(m.relay_url, Some(vec!["http://a".to_string()]));
        assert_eq!(m.max_sessions, Some(5));
        assert_eq!(m.no_mdns, Some(true));
    }

    #[test]
    fn parse_errors_give_line_and_column() {
        let e = parse("f", "source = \"tcp://x:1\"\nmax-sessions = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column 16"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("f", "sorce = \"tcp://x:1\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown key `sorce`: did you mean `source`?"),
            "{e}"
        );
        let e = parse("f", "idle-timout = 5").unwrap_err().to_string();
        assert!(e.contains("did you mean `idle-timeout`?"), "{e}");
        // nothing near: no list of every key, the way to see them
        let e = parse("f", "zzz = 1").unwrap_err().to_string();
        assert!(e.contains("config init"), "{e}");
        assert!(!e.contains("expected one of"), "{e}");
    }

    #[test]
    fn role_and_mode_checked() {
        let f = parse("f", "role = \"receiver\"").unwrap();
        assert!(check_file("f", &f, Role::Sender, Mode::Iroh).is_err());
        assert!(check_file("f", &f, Role::Receiver, Mode::Iroh).is_ok());
        let f = parse("f", "mode = \"iroh-default\"").unwrap();
        assert!(check_file("f", &f, Role::Sender, Mode::Iroh).is_ok());
        let f = parse("f", "mode = \"nostr\"").unwrap();
        assert!(check_file("f", &f, Role::Sender, Mode::Iroh).is_err());
        let f = parse("f", "target = \"tcp://x:1\"").unwrap();
        let e = check_file("f", &f, Role::Sender, Mode::Iroh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("target"), "{e}");
        // a key of another mode is an error, not silently ignored
        let f = parse("f", "nsec-file = \"k\"").unwrap();
        let e = check_file("f", &f, Role::Sender, Mode::Iroh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nsec-file") && e.contains("iroh"), "{e}");
        assert!(check_file("f", &f, Role::Receiver, Mode::Nostr).is_ok());
    }
}
