//! `peerport config init`: a commented example config for a role and mode,
//! written from the settings table, so every key is a long flag of that
//! command and its comment is the flag's help.

use peerport_signaling::Mode;

use super::{
    declare::{Kind, Role},
    SETTINGS,
};

/// A value to show for `key` (TOML), and whether a config needs it.
fn example(key: &str, role: Role, mode: Mode) -> Option<(&'static str, bool)> {
    let sender = role == Role::Sender;
    Some(match key {
        "source" => ("\"tcp://127.0.0.1:22\"", true),
        "target" => ("\"tcp://127.0.0.1:2222\"", true),
        "allow" => ("[\"10.0.0.0/24:22,443\", \"db.internal:5432\"]", false),
        "node-id" => ("\"ppt1... (the ticket the sender printed)\"", false),
        "ticket-file" => ("\"/etc/peerport/ssh.ticket\"", true),
        // a fresh identity (and ticket) at every start is rarely wanted
        "secret-file" if sender => ("\"/var/lib/peerport/sender.key\"", true),
        "secret-file" => ("\"/var/lib/peerport/receiver.key\"", false),
        "offer-file" => ("\"/run/peerport/offers.txt\"", false),
        "answer-file" => ("\"/run/peerport/answers.txt\"", false),
        "nsec-file" => ("\"/etc/peerport/nostr.nsec\"", true),
        "peer-npub" => ("\"npub1... (the other side's `peerport show-npub`)\"", true),
        "relay" if mode == Mode::Nostr => ("[\"wss://relay.example.org\"]", true),
        "relay-url" => ("[\"https://relay.example.org\"]", false),
        "stun-server" => ("[\"stun.example.org:3478\"]", false),
        "turn-server" => ("[\"turn:turn.example.org:3478\"]", false),
        "allowed-peer" => ("[\"<endpoint id of a receiver>\"]", false),
        "metrics" => ("\"127.0.0.1:9090\"", false),
        "dashboard" => ("\"127.0.0.1:8080\"", false),
        "bind" => ("\"0.0.0.0:0\"", false),
        "congestion" => ("\"bbr\"", false),
        "name" => ("\"ssh\"", false),
        "dns-server" => ("\"https://dns.example.org/pkarr\"", false),
        "relay-ca" => ("\"/etc/peerport/relay-ca.pem\"", false),
        "authorized-peers-file" => ("\"/etc/peerport/authorized-peers\"", false),
        "control-socket" => ("\"/run/peerport/ssh.sock\"", false),
        "dashboard-token-file" => ("\"/etc/peerport/dashboard.token\"", false),
        _ => return None,
    })
}

/// The example file for `role` in `mode`.
pub fn render(role: Role, mode: Mode) -> String {
    let mut out = format!(
        "# peerport {role} in mode {mode}: `peerport run -c THIS_FILE`.\n\
         # Keys are the long flags of `peerport {role} {mode}` (see --help); a flag\n\
         # given on a command line wins over the file. Uncomment what you need.\n\n\
         role = \"{role}\"\nmode = \"{mode}\"\n",
        role = role.as_str()
    );
    for s in SETTINGS.iter().filter(|s| s.scope.applies(role, mode)) {
        let key = s.key();
        let help = s.help();
        out.push('\n');
        for line in wrap(&help, 76) {
            out.push_str("# ");
            out.push_str(&line);
            out.push('\n');
        }
        let (value, needed) = match example(&key, role, mode) {
            Some(v) => (v.0.to_string(), v.1),
            None if s.kind == Kind::Switch => ("true".to_string(), false),
            None => {
                let name = s.value_name.unwrap_or("VALUE");
                // a default that starts with a number is shown as that number
                let number = s.default.and_then(|d| {
                    let d = d();
                    let first = d.split_whitespace().next().unwrap_or("");
                    let first = first.trim_end_matches(|c: char| !c.is_ascii_digit());
                    first.parse::<f64>().is_ok().then(|| first.to_string())
                });
                let value = match number {
                    Some(n) => n,
                    None if ["N", "SECS", "MIB", "PORT", "KIND"].contains(&name) => "0".into(),
                    None => format!("\"{name}\""),
                };
                if s.kind == Kind::List {
                    (format!("[{value}]"), false)
                } else {
                    (value, false)
                }
            }
        };
        if !needed {
            out.push_str("# ");
        }
        out.push_str(&format!("{key} = {value}\n"));
    }
    if role == Role::Sender {
        out.push_str(SERVICES);
    }
    out
}

/// How a sender names several services (after every key: TOML tables last).
const SERVICES: &str = "
# Several services in one tunnel: `source = [\"ssh=tcp://127.0.0.1:22\", ...]`,
# or one table each (receivers reach them with --target NAME=URL).
# `allowed-peer` (mode iroh) limits a service to some receiver ids;
# `proxy-protocol` starts each connection with a PROXY v2 header (the
# receiver-side client's address).
# [[service]]
# name = \"ssh\"
# source = \"tcp://127.0.0.1:22\"
# proxy-protocol = false
# [[service]]
# name = \"dns\"
# source = \"udp://127.0.0.1:53\"
# allowed-peer = [\"<endpoint id of a receiver>\"]
";

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::file as config;

    #[test]
    fn every_example_parses_and_belongs_to_its_role_and_mode() {
        for role in Role::ALL {
            for mode in [Mode::Iroh, Mode::IrohManual, Mode::Ice, Mode::Nostr] {
                let text = render(role, mode);
                let p = config::parse("example", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
                config::check_file("example", &p, role, mode)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                // uncommenting every line must still parse and belong
                let is_setting = |l: &str| {
                    l == "[[service]]"
                        || l.split_once(" = ").is_some_and(|(k, _)| {
                            k.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        })
                };
                let all: String = text
                    .lines()
                    .map(|l| l.strip_prefix("# ").filter(|l| is_setting(l)).unwrap_or(l))
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let p = config::parse("all", &all).unwrap_or_else(|e| panic!("{e}\n{all}"));
                config::check_file("all", &p, role, mode).unwrap_or_else(|e| panic!("{e}\n{all}"));
            }
        }
    }
}
