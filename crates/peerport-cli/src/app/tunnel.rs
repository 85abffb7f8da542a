//! A sender or a receiver in any mode: one generic path each over the
//! [`Mode`] seam, with what the person is told along the way.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::future::LocalBoxFuture;
use peerport::{
    modes::{manual::Console, Announce, Awaiting, Mode, ModeContext},
    receiver::Receiver,
    sender::Sender,
    status,
};

use super::{
    signals::{ignore_hangup, reload_on_hangup, stop_signal, stop_signals},
    Reload,
};
use crate::{
    observe::{Observers, Progress},
    settings::{ModeVisitor, Settings},
};

/// The terminal as the copy-paste modes' [`Console`]: prompts on stderr,
/// blobs on stdout (alone, so they can be piped), pastes from stdin.
struct Terminal {
    stdin: tokio::sync::Mutex<tokio::io::BufReader<tokio::io::Stdin>>,
}

impl Terminal {
    fn shared() -> Arc<dyn Console> {
        Arc::new(Terminal {
            stdin: tokio::sync::Mutex::new(tokio::io::BufReader::new(tokio::io::stdin())),
        })
    }
}

impl Console for Terminal {
    fn say(&self, text: &str) {
        crate::out::say!("{text}");
    }

    fn show(&self, armor: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(armor.as_bytes())?;
        out.flush()
    }

    fn read_line(&self) -> futures::future::BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            use tokio::io::AsyncBufReadExt;
            let mut line = Vec::new();
            match self.stdin.lock().await.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line),
            }
        })
    }
}

/// The process's name: `--name`, else ROLE-PID.
fn process_name(s: &Settings, role: &str) -> String {
    s.observe
        .name
        .clone()
        .unwrap_or_else(|| format!("{role}-{}", std::process::id()))
}

/// The `--target` lines that reach each of the sender's services.
fn target_hint(catalog: &peerport::engine::policy::Catalog) -> String {
    let mut lines: Vec<String> = catalog
        .services()
        .iter()
        .map(|svc| {
            let name = if svc.name.is_empty() {
                String::new()
            } else {
                format!("{}=", svc.name)
            };
            format!("--target {name}{}://127.0.0.1:PORT", svc.source.protocol)
        })
        .collect();
    if !catalog.allow_rules().is_empty() {
        lines.push(
            "--target tcp://127.0.0.1:PORT=HOST:PORT (a destination the --allow rules cover)"
                .into(),
        );
    }
    lines.join(" ")
}

/// Every sender: the mode's acceptor under one [`Sender`].
pub(super) async fn run_sender(
    s: Settings,
    progress: Progress,
    reload: Option<Reload>,
) -> Result<()> {
    s.mode
        .visit(SenderRun {
            s: &s,
            progress,
            reload,
        })
        .await
}

struct SenderRun<'a> {
    s: &'a Settings,
    progress: Progress,
    reload: Option<Reload>,
}

impl<'a> ModeVisitor<'a> for SenderRun<'a> {
    type Out = LocalBoxFuture<'a, Result<()>>;
    fn visit<M: Mode>(self, mode: &'a M) -> Self::Out {
        Box::pin(serve(mode, self.s, self.progress, self.reload))
    }
}

/// A sender in mode `M`: set the mode up, say what the person needs, serve
/// until a signal.
async fn serve<M: Mode>(
    mode: &M,
    s: &Settings,
    progress: Progress,
    reload: Option<Reload>,
) -> Result<()> {
    let (shutdown, now) = stop_signals();
    let catalog = s.catalog.clone().context("a sender needs services")?;
    let hint = target_hint(&catalog);
    crate::out::say!("peerport sender ({}) forwarding {}", M::NAME, s.describe());
    // setting up may wait on servers (Nostr relays that do not answer):
    // a signal stops it too
    let cx = context(s);
    let accepting = tokio::select! {
        a = mode.acceptor(&cx) => a?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    // the other side needs the same network, unless the ticket names it
    let own = s
        .network
        .as_deref()
        .map(|n| format!(" --network {n}"))
        .unwrap_or_default();
    let named = (accepting.announce.ticket.as_ref()).is_some_and(|t| t.names_relays());
    let net = if named { "" } else { own.as_str() };
    if s.short_verbs {
        announce_share(&accepting.announce, net);
    } else {
        announce(M::NAME, &accepting.announce, &format!("{hint}{net}"), &own);
    }
    let sender = Sender::serving(catalog)
        .engine(s.engine.clone())
        .max_sessions(s.max_sessions)
        .drain_timeout(s.drain_timeout)
        .auth(accepting.auth)
        .build();
    reload_on_hangup(sender.clone(), reload, shutdown.clone());
    let mut info = status::Info::new("sender", &M::NAME.to_string(), &process_name(s, "sender"));
    info.service = s.describe();
    let monitor = status::Monitor::new(info, sender.ledger());
    if let Some(extra) = accepting.metrics {
        monitor.add_metrics(extra);
    }
    let obs = Observers::start(&s.observe, monitor, progress).await?;
    sender.run_until(accepting.acceptor, shutdown, now).await;
    obs.stop().await;
    let input_closed = accepting
        .input_closed
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
    if input_closed && stop_signal().is_none() {
        anyhow::bail!(
            "standard input closed, so no more offers could be read: keep the terminal open, or pass --offer-file FILE (and --answer-file) to run without one"
        );
    }
    Ok(())
}

/// What a mode needs from the settings and the terminal.
fn context(s: &Settings) -> ModeContext {
    ModeContext {
        console: Terminal::shared(),
        max_sessions: s.max_sessions,
        connect_timeout: s.connect_timeout,
    }
}

/// Tell the person what the sender's mode set up: what to copy to the
/// receiver goes to stdout, alone; guidance to stderr.
/// `own_net`: the sender's `--network` flag, which `show-id` needs to
/// print the same ticket.
fn announce(mode: peerport_signaling::Mode, a: &Announce, hint: &str, own_net: &str) {
    if let Some(ticket) = &a.ticket {
        print_ticket(ticket);
    }
    if let Some(id) = &a.identity {
        match &a.answers {
            Some(peer) => crate::out::say!(
                "this sender is {id}, answering {peer} over {} relay(s)",
                a.relays
            ),
            None => crate::out::say!("this sender is endpoint {id}"),
        }
    }
    match (&a.ticket, a.pinned, &a.identity) {
        // the ticket holds the access token: on a terminal it is shown in
        // the command to copy; in a log (journal, file) it is not written
        (Some(ticket), 0, _) if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            crate::out::say!(
                "on the receiver, run:\n  PEERPORT_TICKET={ticket} peerport receiver {mode} {hint}\n(the ticket grants access: keep it off command lines, where `ps` shows it; --ticket-file FILE reads it from a file)"
            )
        }
        (Some(_), 0, _) => crate::out::say!(
            "on the receiver, run: peerport receiver {mode} --ticket-file FILE {hint} (FILE: holding the line this sender printed on standard output, or `peerport show-id --secret-file FILE{own_net}`; not written here, as it grants access)"
        ),
        (_, n, Some(id)) if n > 0 => {
            crate::out::say!("admitting only {n} pinned receiver id(s); they connect with --node-id {id}")
        }
        _ => {}
    }
}

/// The ticket, alone on stdout. A closed stdout must not end the sender:
/// it goes on serving.
fn print_ticket(ticket: &peerport_signaling::Ticket) {
    if let Err(e) = crate::out::println(ticket.encode()) {
        tracing::warn!(
            "the ticket could not be printed ({e:#}); the sender goes on: with --secret-file FILE, `peerport show-id --secret-file FILE` prints it"
        );
    }
}

/// What `peerport share` says: the ticket on stdout, and the command the
/// other side types.
fn announce_share(a: &Announce, net: &str) {
    let Some(ticket) = &a.ticket else { return };
    print_ticket(ticket);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        crate::out::say!(
            "on the other machine, run:\n  peerport connect {ticket} 2222{net}\n(2222: any free local port; or run `peerport connect 2222{net}` and paste the ticket when asked, which keeps it out of `ps`)"
        );
    } else {
        crate::out::say!(
            "on the other machine, run: peerport connect 2222{net}, and paste the ticket when asked (the line this command printed on standard output; not written here, as it grants access)"
        );
    }
}

/// What a receiver waits for while no session is up (`None`: the paste
/// prompt says it).
fn waiting_for(a: Awaiting) -> Option<String> {
    use crate::views::text::short;
    match a {
        Awaiting::Endpoint(Some(id)) => Some(format!("the sender (endpoint {})", short(&id))),
        Awaiting::Endpoint(None) => Some("the sender".into()),
        Awaiting::Npub(npub) => Some(format!("the sender on Nostr ({})", short(&npub))),
        Awaiting::AnswerFile(f) => Some(format!("the sender's answer in {}", f.display())),
        Awaiting::Paste => None,
    }
}

/// Every receiver: one [`Receiver`] over the mode's dialer.
pub(super) async fn run_receiver(s: Settings, progress: Progress) -> Result<()> {
    s.mode.visit(ReceiverRun { s: &s, progress }).await
}

struct ReceiverRun<'a> {
    s: &'a Settings,
    progress: Progress,
}

impl<'a> ModeVisitor<'a> for ReceiverRun<'a> {
    type Out = LocalBoxFuture<'a, Result<()>>;
    fn visit<M: Mode>(self, mode: &'a M) -> Self::Out {
        Box::pin(dial(mode, self.s, self.progress))
    }
}

/// A receiver in mode `M`: listen, then keep a session to the sender until
/// a signal (or until reconnecting gives up).
async fn dial<M: Mode>(mode: &M, s: &Settings, progress: Progress) -> Result<()> {
    let first = s.targets.first().context("a receiver needs a --target")?;
    let receiver = Receiver::builder(first.local.clone())
        .targets(s.targets.clone())
        .engine(s.engine.clone())
        .reconnect(s.reconnect.clone())
        .reconnect_wait(s.reconnect_wait)
        .drain_timeout(s.drain_timeout)
        .bind()
        .await?;
    let (shutdown, now) = stop_signals();
    let mut info = status::Info::new(
        "receiver",
        &M::NAME.to_string(),
        &process_name(s, "receiver"),
    );
    info.service = s.describe();
    let listen: Vec<String> = s
        .targets
        .iter()
        .zip(receiver.local_addrs())
        .map(|(t, a)| format!("{}://{a}", t.local.protocol))
        .collect();
    info.listen = Some(listen.join(", "));
    info.waiting_for = waiting_for(mode.awaiting());
    ignore_hangup(shutdown.clone());
    let monitor = status::Monitor::new(info, receiver.ledger());
    let obs = Observers::start(&s.observe, monitor.clone(), progress).await?;
    let cx = context(s);
    let dialing = tokio::select! {
        d = mode.dialer(&cx) => d,
        _ = shutdown.cancelled() => {
            obs.stop().await;
            return Ok(());
        }
    };
    let dialing = match dialing {
        Ok(d) => d,
        Err(e) => {
            obs.stop().await;
            return Err(e.into());
        }
    };
    if let Some(extra) = dialing.metrics {
        monitor.add_metrics(extra);
    }
    let result = receiver.run_until(dialing.dialer, shutdown, now).await;
    obs.stop().await;
    Ok(result?)
}
