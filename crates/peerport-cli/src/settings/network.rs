//! Networks: a set of self-hosted rendezvous servers (iroh relay with its
//! QUIC address discovery and certificate, pkarr/DNS discovery, STUN/TURN,
//! Nostr relays) described once in a small TOML file, which `peerport
//! rendezvous` writes. `--network FILE|NAME` (or `network = ...` in a config
//! file) fills in each of those settings that the command's role and mode
//! have; a flag or config key given as well wins.

use std::path::{Path, PathBuf};

use peerport_signaling::Mode;

use super::{declare::Role, file, ConfigError, Partial};

/// The settings a network file may hold: where the servers are.
pub const KEYS: &[&str] = &[
    "relay-url",
    "relay-quic-port",
    "relay-ca",
    "dns-server",
    "stun-server",
    "turn-server",
    "turn-user",
    "turn-password-file",
    "relay",
];

/// The file `--network` names: a path (it has a `/` or ends in `.toml`), or
/// NAME for `$XDG_CONFIG_HOME/peerport/networks/NAME.toml`.
pub fn path_of(network: &str) -> Result<PathBuf, ConfigError> {
    if network.contains('/') || network.ends_with(".toml") {
        return Ok(PathBuf::from(network));
    }
    let ok = !network.is_empty()
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(invalid(format!(
            "--network `{network}`: give a file (e.g. ./lab.toml) or a name of letters, digits, '-', '_' or '.'"
        )));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| {
            invalid(format!(
                "--network {network}: neither XDG_CONFIG_HOME nor HOME is set; give the file's path"
            ))
        })?;
    Ok(base
        .join("peerport")
        .join("networks")
        .join(format!("{network}.toml")))
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: Some("network"),
        reason,
    }
}

/// Read the network file at `path`: only [`KEYS`], relative file paths
/// taken from the file's own directory.
pub fn load(path: &Path) -> Result<Partial, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(format!(
            "--network: cannot read {shown}: {e} (`peerport rendezvous --state DIR` writes DIR/network.toml)"
        ))
    })?;
    let mut n = file::parse(&shown, &text)?;
    if let Some(key) = file::keys_set(&n)
        .into_iter()
        .find(|k| !KEYS.contains(&k.as_str()))
    {
        return Err(ConfigError::Mismatch {
            path: shown,
            message: format!(
                "key `{key}` does not belong in a network file (it holds only {}): put it in a config file",
                KEYS.join(", ")
            ),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    for f in [&mut n.relay_ca, &mut n.turn_password_file]
        .into_iter()
        .flatten()
    {
        if f.is_relative() {
            *f = dir.join(&*f);
        }
    }
    Ok(n)
}

/// The network's settings that `role` has in `mode` (a network serves
/// every mode; each command takes what applies to it).
pub fn for_command(n: Partial, role: Role, mode: Mode) -> Partial {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(&n) else {
        return Partial::default();
    };
    m.retain(|k, v| !v.is_null() && file::key_applies(k, role, mode));
    serde_json::from_value(serde_json::Value::Object(m)).unwrap_or_default()
}

/// The network file's text for servers at these addresses (what `peerport
/// rendezvous` writes); `relay_ca` and `turn_password_file` are file names
/// next to it.
#[allow(clippy::too_many_arguments)]
pub fn render(
    relay_url: &str,
    relay_quic_port: u16,
    relay_ca: &str,
    dns_server: &str,
    stun: &str,
    turn_user: &str,
    turn_password_file: &str,
    nostr_relay: &str,
) -> String {
    format!(
        "# A peerport network: self-hosted rendezvous servers, written by\n\
         # `peerport rendezvous`. Give it to senders and receivers with\n\
         # --network THIS_FILE (or `network = \"THIS_FILE\"` in a config file);\n\
         # each takes the settings its mode has, and a flag given as well wins.\n\
         # Paths are relative to this file's directory.\n\n\
         relay-url = [\"{relay_url}\"]\n\
         relay-quic-port = {relay_quic_port}\n\
         relay-ca = \"{relay_ca}\"\n\
         dns-server = \"{dns_server}\"\n\
         stun-server = [\"{stun}\"]\n\
         turn-server = [\"turn:{stun}\"]\n\
         turn-user = \"{turn_user}\"\n\
         turn-password-file = \"{turn_password_file}\"\n\
         relay = [\"{nostr_relay}\"]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        render(
            "http://127.0.0.1:3340/",
            7842,
            "relay-ca.pem",
            "http://127.0.0.1:8080/pkarr",
            "127.0.0.1:3478",
            "peerport",
            "turn-password",
            "ws://127.0.0.1:7777",
        )
    }

    #[test]
    fn a_rendered_network_reads_back_with_paths_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.toml");
        std::fs::write(&p, sample()).unwrap();
        let n = load(&p).unwrap();
        assert_eq!(n.relay_url, Some(vec!["http://127.0.0.1:3340/".into()]));
        assert_eq!(n.relay_quic_port, Some(7842));
        assert_eq!(n.relay_ca, Some(dir.path().join("relay-ca.pem")));
        assert_eq!(n.turn_password_file, Some(dir.path().join("turn-password")));
    }

    #[test]
    fn each_command_takes_what_its_mode_has() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.toml");
        std::fs::write(&p, sample()).unwrap();
        let n = load(&p).unwrap();
        let iroh = for_command(n.clone(), Role::Sender, Mode::Iroh);
        assert!(iroh.relay_url.is_some() && iroh.dns_server.is_some());
        assert!(iroh.turn_server.is_none() && iroh.relay.is_none() && iroh.stun_server.is_none());
        let ice = for_command(n.clone(), Role::Receiver, Mode::Ice);
        assert!(ice.turn_server.is_some() && ice.stun_server.is_some());
        assert!(ice.relay_url.is_none() && ice.relay.is_none());
        let nostr = for_command(n, Role::Receiver, Mode::Nostr);
        assert!(nostr.relay.is_some() && nostr.turn_server.is_some());
    }

    #[test]
    fn other_settings_do_not_belong_in_a_network() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.toml");
        std::fs::write(
            &p,
            "relay-url = [\"http://x/\"]\nsource = \"tcp://127.0.0.1:22\"\n",
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("`source` does not belong in a network file"),
            "{e}"
        );
    }

    #[test]
    fn a_name_is_a_file_in_the_config_directory() {
        assert_eq!(path_of("./lab.toml").unwrap(), PathBuf::from("./lab.toml"));
        assert!(path_of("lab")
            .unwrap()
            .ends_with("peerport/networks/lab.toml"));
        assert!(path_of("bad name").is_err());
    }
}
