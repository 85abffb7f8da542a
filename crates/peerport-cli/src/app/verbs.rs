//! `peerport share` and `peerport connect`: the common case in two short
//! commands, each the full `sender iroh` / `receiver iroh` underneath. What
//! one prints is what the other side types. `connect` takes what `share`
//! printed where a ticket goes, so a short pairing code can later be
//! accepted in the same place.

use std::path::PathBuf;

use anyhow::{Context, Result};
use peerport_signaling::{Mode, Ticket};

use crate::settings::{self, file::ConfigArgs, Partial, Role, Settings};

/// `22` is `tcp://127.0.0.1:22`; a URL stays as it is.
fn local_url(what: &str) -> String {
    if what.parse::<u16>().is_ok() {
        format!("tcp://127.0.0.1:{what}")
    } else {
        what.to_string()
    }
}

/// Where `share` keeps its identity: `$XDG_DATA_HOME/peerport/share.key`
/// (`~/.local/share/peerport/share.key`), its directory made 0700.
fn share_key() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set, so `share` has nowhere to keep its identity: use `peerport sender iroh --secret-file FILE`")?;
    let dir = base.join("peerport");
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(dir.join("share.key"))
}

/// `peerport share WHAT`: the settings of `peerport sender iroh`.
pub(super) fn share(what: &str, network: Option<String>, name: Option<String>) -> Result<Settings> {
    let cli = Partial {
        source: Some(vec![local_url(what)]),
        secret_file: Some(share_key()?),
        network,
        name,
        ..Default::default()
    };
    let mut s = settings::load(cli, &ConfigArgs::default(), Role::Sender, Mode::Iroh)?;
    s.short_verbs = true;
    Ok(s)
}

/// Which of `connect`'s words is the ticket and which the local address.
fn split(args: Vec<String>) -> Result<(Option<String>, Option<String>), settings::ConfigError> {
    let is_ticket = |a: &str| Ticket::looks_like_ticket(a) || a.len() == 64;
    let mut ticket = None;
    let mut local = None;
    for a in args {
        let slot = if is_ticket(&a) {
            &mut ticket
        } else {
            &mut local
        };
        if slot.replace(a).is_some() {
            return Err(settings::ConfigError::Invalid {
                key: None,
                reason:
                    "give one ticket (ppt1...) and one local port: `peerport connect TICKET 2222`"
                        .into(),
            });
        }
    }
    Ok((ticket, local))
}

/// `peerport connect [TICKET] [LOCAL]`: the settings of `peerport receiver
/// iroh`. Without a TICKET: PEERPORT_TICKET, else asked for on a terminal.
pub(super) async fn connect(
    args: Vec<String>,
    network: Option<String>,
    name: Option<String>,
) -> Result<Settings> {
    let (mut ticket, local) = split(args)?;
    let from_env = std::env::var(settings::TICKET_ENV).is_ok_and(|t| !t.trim().is_empty());
    if ticket.is_none() && !from_env && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        ticket = Some(ask_ticket().await?);
    }
    let cli = Partial {
        target: Some(vec![local_url(local.as_deref().unwrap_or("0"))]),
        node_id: ticket,
        network,
        name,
        ..Default::default()
    };
    let mut s = settings::load(cli, &ConfigArgs::default(), Role::Receiver, Mode::Iroh)?;
    s.short_verbs = true;
    Ok(s)
}

/// Ask for the ticket on the terminal (it then never appears in `ps`).
async fn ask_ticket() -> Result<String> {
    use tokio::io::AsyncBufReadExt;
    crate::out::say_inline(format_args!(
        "paste the ticket `peerport share` printed (ppt1...): "
    ));
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .context("reading the ticket")?;
    let t = line.trim().trim_start_matches(['>', ' ']).to_string();
    if t.is_empty() {
        anyhow::bail!("no ticket given: paste the line `peerport share` printed");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_in_either_order() {
        let t = "ppt1aaaa".to_string();
        assert_eq!(
            split(vec![t.clone(), "2222".into()]).unwrap(),
            (Some(t.clone()), Some("2222".into()))
        );
        assert_eq!(
            split(vec!["2222".into(), t.clone()]).unwrap(),
            (Some(t.clone()), Some("2222".into()))
        );
        assert_eq!(
            split(vec!["2222".into()]).unwrap(),
            (None, Some("2222".into()))
        );
        assert!(split(vec!["1".into(), "2".into()]).is_err());
        assert_eq!(local_url("22"), "tcp://127.0.0.1:22");
        assert_eq!(local_url("udp://127.0.0.1:53"), "udp://127.0.0.1:53");
    }
}
