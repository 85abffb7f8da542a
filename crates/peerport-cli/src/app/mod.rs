//! The commands behind the binary: each reads settings, runs the library,
//! and turns failures into messages that say what to do.

use std::sync::Arc;

use anyhow::{Context, Result};
use iroh::SecretKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    cli::{Cli, Command},
    observe::{Observers, Progress},
    settings::Role,
    settings::{self, ModeVisitor, Settings},
};
use futures::future::LocalBoxFuture;
use peerport::{
    identity,
    modes::{iroh as iroh_mode, manual::Console, Announce, Awaiting, Mode, ModeContext},
    receiver::{Receiver, ReceiverError},
    sender::Sender,
    status,
};
use peerport_rendezvous::Rendezvous;

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let progress = match cli.log_format {
        crate::cli::LogFormat::Json => Progress::Log,
        crate::cli::LogFormat::Text => Progress::Terminal,
    };
    match cli.command {
        Command::Sender { mode: cmd } => {
            let (mode, partial, cfg) = (cmd.mode, cmd.partial, cmd.config);
            let s = settings::load(partial.clone(), &cfg, Role::Sender, mode)?;
            let reload: Option<Reload> = (cfg.config.is_some() || cfg.default_config).then(|| {
                Box::new(move || settings::load(partial.clone(), &cfg, Role::Sender, mode))
                    as Reload
            });
            run_sender(s, progress, reload).await
        }
        Command::Receiver { mode: cmd } => {
            let s = settings::load(cmd.partial, &cmd.config, Role::Receiver, cmd.mode)?;
            run_receiver(s, progress).await
        }
        Command::Status {
            name,
            json,
            watch,
            control_socket,
        } => status_command(name, json, watch, control_socket).await,
        Command::Run { config, name } => {
            let (role, mode, s) = from_file(&config, name.clone())?;
            match role {
                Role::Sender => {
                    let reload: Reload = Box::new(move || {
                        let (r, m, s) = from_file(&config, name.clone())?;
                        if (r, m) != (role, mode) {
                            return Err(settings::ConfigError::Invalid(
                                "role or mode changed in the file: restart the process to apply that".into(),
                            ));
                        }
                        Ok(s)
                    });
                    run_sender(s, progress, Some(reload)).await
                }
                Role::Receiver => run_receiver(s, progress).await,
            }
        }
        Command::Config { action } => config_command(action),
        Command::GenerateSecret { output, force } => {
            let key = SecretKey::generate();
            identity::write(&output, &key, force)?;
            eprintln!("wrote a new secret key to {} (mode 0600)", output.display());
            print_identity(&key);
            Ok(())
        }
        Command::ShowId { secret_file } => {
            let key = identity::load(&secret_file)?;
            print_identity(&key);
            Ok(())
        }
        Command::GenerateNostrKey { output, force } => {
            let (nsec, npub) = peerport_signaling::nostr::generate();
            match output {
                Some(path) => {
                    identity::write_private(&path, &nsec, force)?;
                    eprintln!(
                        "wrote a new Nostr secret key to {} (mode 0600)",
                        path.display()
                    );
                }
                None => println!("{nsec}"),
            }
            println!("{npub}");
            Ok(())
        }
        Command::ShowNpub { nsec_file } => {
            let hex = settings::read_nsec(nsec_file.as_ref())?;
            println!("{}", peerport_signaling::nostr::npub_of(&hex)?);
            Ok(())
        }
        Command::Netcheck {
            stun_server,
            relay_url,
            relay_quic_port,
            relay_ca,
            relay,
            bind,
            json,
            turn,
        } => {
            let partial = turn.partial;
            let probe = peerport::netcheck::Probe {
                bind: bind
                    .map(|b| b.parse())
                    .transpose()
                    .context("--bind must be IP:PORT")?,
                stun_servers: if stun_server.is_empty() {
                    peerport::stun::DEFAULT_STUN_SERVERS
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                } else {
                    stun_server
                },
                turn_servers: settings::turn_servers(&partial)?,
                relay_urls: relay_url,
                relay_quic_port,
                relay_ca: match relay_ca {
                    Some(f) => crate::tlsfile::load_certs(&f)
                        .map_err(|e| anyhow::anyhow!("--relay-ca: {e}"))?,
                    None => Vec::new(),
                },
                nostr_relays: relay,
            };
            let report = peerport::netcheck::run(&probe).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            Ok(())
        }
        Command::Demo { megabytes } => crate::demo::run(megabytes).await,
        Command::Rendezvous { bind, state } => {
            let r = match state {
                Some(dir) => Rendezvous::start_in(bind, &dir).await?,
                None => Rendezvous::start(bind).await?,
            };
            println!("relay-url {}", r.relay_url);
            println!("relay-quic-port {}", r.relay_quic_port);
            println!("relay-ca {}", r.relay_ca_file.display());
            println!("dns-server {}", r.pkarr_url);
            println!("dns-udp {}", r.dns_addr);
            println!("stun-server {}", r.turn_addr);
            println!("nostr-relay {}", r.nostr_url());
            println!(
                "turn-server turn:{} user {} password {}",
                r.turn_addr, r.turn_user, r.turn_password
            );
            eprintln!("embedded rendezvous servers running; Ctrl-C stops them");
            shutdown_signal().cancelled().await;
            r.shutdown().await;
            Ok(())
        }
    }
}

fn print_identity(key: &SecretKey) {
    println!("endpoint-id {}", key.public());
    println!("ticket {}", iroh_mode::ticket_for(key).encode());
}

/// The signal that asked the process to stop (0: none yet).
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal (2 = SIGINT/Ctrl-C, 15 = SIGTERM) that stopped the process, if
/// any: the binary then exits with 128 + its number, as shells expect.
pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Two tokens: the first signal (SIGTERM or Ctrl-C) cancels the first
/// (stop accepting, drain); Ctrl-C, or a second signal, also the second
/// (close at once). See [`stop_signal`].
pub fn stop_signals() -> (CancellationToken, CancellationToken) {
    let (drain, now) = (CancellationToken::new(), CancellationToken::new());
    let (d, n) = (drain.clone(), now.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let first = tokio::select! {
            _ = recv_signal(&mut int) => 2,
            _ = recv_signal(&mut term) => 15,
        };
        let _ = STOP_SIGNAL.compare_exchange(
            0,
            first,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        info!("shutting down");
        d.cancel();
        if first == 2 {
            n.cancel();
            return;
        }
        tokio::select! {
            _ = recv_signal(&mut int) => {}
            _ = recv_signal(&mut term) => {}
        }
        n.cancel();
    });
    (drain, now)
}

/// A token cancelled on Ctrl-C or SIGTERM (see [`stop_signal`]).
pub fn shutdown_signal() -> CancellationToken {
    stop_signals().0
}

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
        eprintln!("{text}");
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

/// `peerport status`: ask running processes, print text or JSON.
async fn status_command(
    name: Option<String>,
    json: bool,
    watch: Option<f64>,
    explicit: Option<std::path::PathBuf>,
) -> Result<()> {
    use crate::views::{control, text};
    let targets = control::targets(explicit.as_deref(), name.as_deref());
    let stop = shutdown_signal();
    loop {
        let all = control::query_all(&targets).await?;
        let out = if json {
            let v = if all.len() == 1 && (name.is_some() || explicit.is_some()) {
                serde_json::to_string_pretty(&all[0])?
            } else {
                serde_json::to_string_pretty(&all)?
            };
            v + "\n"
        } else {
            all.iter().map(text::render).collect::<Vec<_>>().join("\n")
        };
        let Some(every) = watch else {
            print!("{out}");
            return Ok(());
        };
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // clear the screen and go home, like watch(1)
            print!("\x1b[H\x1b[2J{out}");
        } else {
            print!("{out}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs_f64(every.max(0.2))) => {}
        }
    }
}

/// The settings a config file for `peerport run -c` describes: its `role`
/// and `mode` keys say which command it is.
fn from_file(
    path: &std::path::Path,
    name: Option<String>,
) -> Result<(Role, peerport_signaling::Mode, Settings), settings::ConfigError> {
    use settings::ConfigError;
    let file = settings::file::load(path)?;
    let shown = path.display().to_string();
    let need = |what: &str, example: &str| {
        ConfigError::Mismatch {
        path: shown.clone(),
        message: format!("`peerport run` needs `{what}` in the file (e.g. {example}); `peerport config init` writes an example"),
    }
    };
    let role = match file.role.as_deref() {
        Some("sender") => Role::Sender,
        Some("receiver") => Role::Receiver,
        Some(other) => {
            return Err(ConfigError::Mismatch {
                path: shown,
                message: format!("role = \"{other}\": write \"sender\" or \"receiver\""),
            })
        }
        None => return Err(need("role", "role = \"sender\"")),
    };
    let mode: peerport_signaling::Mode = file
        .mode
        .as_deref()
        .ok_or_else(|| need("mode", "mode = \"iroh\""))?
        .parse()
        .map_err(|e| ConfigError::Mismatch {
            path: shown.clone(),
            message: format!("{e}"),
        })?;
    let cfg = settings::file::ConfigArgs {
        config: Some(path.to_owned()),
        default_config: false,
    };
    let cli = settings::Partial {
        name,
        ..Default::default()
    };
    let s = settings::load(cli, &cfg, role, mode)?;
    Ok((role, mode, s))
}

/// `peerport config init|check`.
fn config_command(action: crate::cli::ConfigAction) -> Result<()> {
    match action {
        crate::cli::ConfigAction::Init {
            role,
            mode,
            output,
            force,
        } => {
            let role = if role == "sender" {
                Role::Sender
            } else {
                Role::Receiver
            };
            let text = settings::template::render(role, mode);
            match output {
                None => print!("{text}"),
                Some(path) => {
                    if path.exists() && !force {
                        return Err(settings::ConfigError::Invalid(format!(
                            "{} exists: pass --force to overwrite it",
                            path.display()
                        ))
                        .into());
                    }
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {}: fill in the required values, then `peerport config check {}`",
                        path.display(),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        crate::cli::ConfigAction::Check { file } => {
            let (role, mode, s) = from_file(&file, None)?;
            println!(
                "{}: ok: a {} in mode {mode}, {} {}",
                file.display(),
                role.as_str(),
                if role == Role::Sender {
                    "forwarding"
                } else {
                    "listening on"
                },
                s.describe()
            );
            Ok(())
        }
    }
}

/// The process's name: `--name`, else ROLE-PID.
fn process_name(s: &Settings, role: &str) -> String {
    s.observe
        .name
        .clone()
        .unwrap_or_else(|| format!("{role}-{}", std::process::id()))
}

/// Re-reads the settings from the config file (SIGHUP).
type Reload = Box<dyn Fn() -> Result<Settings, settings::ConfigError> + Send + Sync>;

/// Run `f` on every SIGHUP until `stop` fires (and no longer die of it,
/// which is SIGHUP's default).
fn on_hangup(stop: CancellationToken, mut f: impl FnMut() + Send + 'static) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            f();
        }
    });
}

/// On every SIGHUP: re-read the config file and serve its services and
/// rules (sessions that still comply go on); a bad file keeps the old ones.
fn reload_on_hangup(sender: Sender, reload: Option<Reload>, stop: CancellationToken) {
    on_hangup(stop, move || {
        let Some(reload) = &reload else {
            info!("SIGHUP: nothing to re-read (started without a config file)");
            return;
        };
        match reload().map(|s| s.catalog) {
            Ok(Some(new)) if *sender.catalog() == new => {
                info!("SIGHUP: configuration re-read, services and rules unchanged")
            }
            Ok(Some(new)) => {
                info!(services = %new.summary(), "SIGHUP: configuration re-read: serving these services and rules now (other settings need a restart)");
                sender.reload(new);
            }
            Ok(None) => {}
            Err(e) => warn!(
                "SIGHUP: the config file has an error, keeping the running configuration: {e}"
            ),
        }
    });
}

/// What a receiver does on SIGHUP: nothing but say so (its listeners are
/// bound once).
fn ignore_hangup(stop: CancellationToken) {
    on_hangup(stop, || {
        info!("SIGHUP: a receiver re-reads nothing; restart it to change its targets")
    });
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
async fn run_sender(s: Settings, progress: Progress, reload: Option<Reload>) -> Result<()> {
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
    eprintln!("peerport sender ({}) forwarding {}", M::NAME, s.describe());
    let accepting = mode.acceptor(&context(s)).await?;
    announce(M::NAME, &accepting.announce, &hint);
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
fn announce(mode: peerport_signaling::Mode, a: &Announce, hint: &str) {
    if let Some(ticket) = &a.ticket {
        println!("{ticket}");
    }
    if let Some(id) = &a.identity {
        match &a.answers {
            Some(peer) => eprintln!(
                "this sender is {id}, answering {peer} over {} relay(s)",
                a.relays
            ),
            None => eprintln!("this sender is endpoint {id}"),
        }
    }
    match (&a.ticket, a.pinned, &a.identity) {
        (Some(ticket), 0, _) => {
            eprintln!("on the receiver, run:\n  peerport receiver {mode} --node-id {ticket} {hint}")
        }
        (_, n, Some(id)) if n > 0 => {
            eprintln!("admitting only {n} pinned receiver id(s); they connect with --node-id {id}")
        }
        _ => {}
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
async fn run_receiver(s: Settings, progress: Progress) -> Result<()> {
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
    let dialing = match mode.dialer(&context(s)).await {
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

/// Exit codes a wrapper can rely on (also in the README).
pub mod exit {
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
}

/// The exit code for an error from [`run`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<ReceiverError>() {
            return match r {
                ReceiverError::Refused(_) => exit::REFUSED,
                ReceiverError::Fatal(_) => exit::FAILURE,
                _ => exit::UNREACHABLE,
            };
        }
        if cause.downcast_ref::<settings::ConfigError>().is_some()
            || cause.downcast_ref::<identity::IdentityError>().is_some()
        {
            return exit::USAGE;
        }
    }
    exit::FAILURE
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
