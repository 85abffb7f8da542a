//! The machinery behind the settings table ([`super::table`]): one
//! declaration per setting gives its command-line flag, its config-file key,
//! the roles and modes it belongs to, its help and its default, so the
//! flags, the file format, the precedence merge, the scope check and the
//! `config init` template cannot drift apart.

use std::{path::PathBuf, time::Duration};

use clap::{Arg, ArgAction, ArgMatches};
use peerport_signaling::Mode;

/// Which side a command or file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs next to the service.
    Sender,
    /// Runs next to the client.
    Receiver,
}

impl Role {
    /// Both roles (for tests and the fuzz targets).
    #[allow(dead_code)]
    pub const ALL: [Role; 2] = [Role::Sender, Role::Receiver];

    /// `sender` or `receiver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a local TCP client waits for the tunnel by default.
pub const DEFAULT_RECONNECT_WAIT: Duration = Duration::from_secs(10);
/// The longest drain on SIGTERM by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the table's setting named `name` (its field, `resume_window`,
/// or its key, `resume-window`) belongs to `role` in `mode`.
pub fn applies(name: &str, role: Role, mode: Mode) -> bool {
    let field = name.replace('-', "_");
    super::table::SETTINGS
        .iter()
        .any(|s| s.field == field && s.scope.applies(role, mode))
}

/// The roles and modes a setting belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    sender: bool,
    receiver: bool,
    modes: &'static [Mode],
}

/// Every mode.
pub const ALL_MODES: &[Mode] = &Mode::ALL;

impl Scope {
    /// Both roles in `modes`.
    pub const fn both(modes: &'static [Mode]) -> Scope {
        Scope {
            sender: true,
            receiver: true,
            modes,
        }
    }

    /// Senders in `modes`.
    pub const fn sender(modes: &'static [Mode]) -> Scope {
        Scope {
            sender: true,
            receiver: false,
            modes,
        }
    }

    /// Receivers in `modes`.
    pub const fn receiver(modes: &'static [Mode]) -> Scope {
        Scope {
            sender: false,
            receiver: true,
            modes,
        }
    }

    /// Whether the setting belongs to `role` in `mode`.
    pub fn applies(&self, role: Role, mode: Mode) -> bool {
        let role_ok = match role {
            Role::Sender => self.sender,
            Role::Receiver => self.receiver,
        };
        role_ok && self.modes.contains(&mode)
    }
}

/// How a setting's value is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `--no-mdns`, `no-mdns = true`.
    Switch,
    /// One value: `--bind ADDR`, `bind = "ADDR"`.
    One,
    /// A repeatable flag: `--relay-url A --relay-url B`, `relay-url = ["A", "B"]`.
    List,
}

/// A type a setting can have: how clap parses it and reads it back.
pub trait Value: Sized {
    /// How it is given.
    const KIND: Kind;
    /// The flag's action and parser.
    fn configure(arg: Arg) -> Arg;
    /// The value given on the command line (`None`: not given).
    fn get(m: &ArgMatches, id: &str) -> Option<Self>;
}

macro_rules! one_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const KIND: Kind = Kind::One;
            fn configure(arg: Arg) -> Arg {
                arg.action(ArgAction::Set).value_parser(clap::value_parser!($t))
            }
            fn get(m: &ArgMatches, id: &str) -> Option<Self> {
                m.try_get_one::<$t>(id).ok().flatten().cloned()
            }
        }
    )*};
}
one_value!(String, PathBuf, u64, usize, u16);

impl Value for bool {
    const KIND: Kind = Kind::Switch;
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::SetTrue)
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Self> {
        m.try_get_one::<bool>(id)
            .ok()
            .flatten()
            .copied()
            .filter(|on| *on)
    }
}

impl Value for Vec<String> {
    const KIND: Kind = Kind::List;
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_parser(clap::value_parser!(String))
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Self> {
        m.try_get_many::<String>(id)
            .ok()
            .flatten()
            .map(|v| v.cloned().collect())
    }
}

/// The longest duration a setting takes, in seconds (a year): anything
/// longer means "forever" to a person, and would overflow the clocks it is
/// added to.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// A duration in whole seconds, at most [`MAX_SECS`], checked where it is
/// read (flag or config file), so no later arithmetic can overflow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u64", into = "u64")]
pub struct Secs(pub u64);

impl Secs {
    /// As a [`std::time::Duration`].
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl TryFrom<u64> for Secs {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        if n > MAX_SECS {
            return Err(format!(
                "{n} seconds is longer than a year; give at most {MAX_SECS} (for \"never\", see the setting's help)"
            ));
        }
        Ok(Secs(n))
    }
}

impl From<Secs> for u64 {
    fn from(s: Secs) -> u64 {
        s.0
    }
}

impl std::fmt::Display for Secs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Value for Secs {
    const KIND: Kind = Kind::One;
    fn configure(arg: Arg) -> Arg {
        use clap::builder::TypedValueParser;
        arg.action(ArgAction::Set)
            .value_parser(clap::value_parser!(u64).range(..=MAX_SECS).map(Secs))
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Self> {
        m.try_get_one::<Secs>(id).ok().flatten().copied()
    }
}

/// One setting as the table declares it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The field of [`super::Partial`] (snake case); the flag and key are its kebab case.
    pub field: &'static str,
    /// The doc comment, line by line.
    pub doc: &'static [&'static str],
    /// Where it belongs.
    pub scope: Scope,
    /// How it is given.
    pub kind: Kind,
    /// The value's name in the help (`SECS`, `FILE`).
    pub value_name: Option<&'static str>,
    /// A one-letter flag.
    pub short: Option<char>,
    /// Another (hidden) flag name.
    pub alias: Option<&'static str>,
    /// The default, as the help and the template show it.
    pub default: Option<fn() -> String>,
    /// The flag's action and parser ([`Value::configure`] of its type).
    pub configure: fn(Arg) -> Arg,
}

impl Setting {
    /// The flag's name and the config file's key (`resume-window`).
    pub fn key(&self) -> String {
        self.field.replace('_', "-")
    }

    /// The help text: the doc comment as one paragraph, then `[default: X]`.
    pub fn help(&self) -> String {
        let text = self
            .doc
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let text = text.strip_suffix('.').unwrap_or(&text).to_string();
        match self.default {
            Some(d) => format!("{text} [default: {}]", d()),
            None => text,
        }
    }

    /// The clap flag.
    pub fn arg(&self) -> Arg {
        let mut arg = (self.configure)(Arg::new(self.field).long(self.key()).help(self.help()));
        if let Some(v) = self.value_name {
            arg = arg.value_name(v);
        }
        if let Some(c) = self.short {
            arg = arg.short(c);
        }
        if let Some(a) = self.alias {
            arg = arg.alias(a);
        }
        arg
    }
}

/// Declares the settings: the [`super::Partial`] struct (every setting
/// optional, as a file or a command line gives it), the table of
/// [`Setting`]s, the clap flags and the precedence rule. Each entry is a
/// doc comment (the help), `field: Type { scope: .., value: "NAME", short:
/// 'c', alias: "x", default: expr, serde: "fn" }` with every part but
/// `scope` optional (in that order).
macro_rules! settings {
    (
        $(
            $(#[doc = $doc:literal])+
            $field:ident : $ty:ty {
                scope: $scope:expr
                $(, value: $value:literal)?
                $(, short: $short:literal)?
                $(, alias: $alias:literal)?
                $(, default: $default:expr)?
                $(, serde: $serde:literal)?
                $(,)?
            }
        )*
    ) => {
        /// Every setting, each optional: what a file or a command line says.
        #[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Partial {
            /// `sender` or `receiver` (files only).
            pub role: Option<String>,
            /// The mode's name (files only).
            pub mode: Option<String>,
            /// Sender: `[[service]]` tables (files only).
            pub service: Option<Vec<ServiceTable>>,
            $(
                $(#[doc = $doc])+
                $(#[serde(default, deserialize_with = $serde)])?
                pub $field: Option<$ty>,
            )*
        }

        /// Every setting in the order `--help` and `config init` show them.
        pub const SETTINGS: &[$crate::settings::declare::Setting] = &[
            $(
                $crate::settings::declare::Setting {
                    field: stringify!($field),
                    doc: &[$($doc),+],
                    scope: $scope,
                    kind: <$ty as $crate::settings::declare::Value>::KIND,
                    value_name: settings!(@opt $($value)?),
                    short: settings!(@opt $($short)?),
                    alias: settings!(@opt $($alias)?),
                    default: settings!(@default $($default)?),
                    configure: <$ty as $crate::settings::declare::Value>::configure,
                },
            )*
        ];

        impl Partial {
            /// The precedence rule: each setting on the command line (`cli`)
            /// wins over the file.
            pub fn overlay(file: Partial, cli: Partial) -> Partial {
                Partial {
                    role: cli.role.or(file.role),
                    mode: cli.mode.or(file.mode),
                    service: cli.service.or(file.service),
                    $($field: cli.$field.or(file.$field),)*
                }
            }

            /// The settings a command line gives, among the flags `wanted`
            /// (by field name) that the command has.
            pub fn from_matches(m: &clap::ArgMatches, wanted: impl Fn(&str) -> bool) -> Partial {
                Partial {
                    $($field: if wanted(stringify!($field)) {
                        <$ty as $crate::settings::declare::Value>::get(m, stringify!($field))
                    } else {
                        None
                    },)*
                    ..Default::default()
                }
            }

            /// The clap flags of the settings `wanted`, in table order.
            pub fn args(wanted: impl Fn(&$crate::settings::declare::Setting) -> bool) -> Vec<clap::Arg> {
                SETTINGS.iter().filter(|s| wanted(s)).map(|s| s.arg()).collect()
            }
        }
    };
    (@opt) => { None };
    (@opt $v:expr) => { Some($v) };
    (@default) => { None };
    (@default $d:expr) => { Some(|| ($d).to_string()) };
}
pub(crate) use settings;
