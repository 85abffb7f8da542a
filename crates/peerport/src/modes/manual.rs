//! Copy-paste signaling shared by `iroh-manual` and `ice`.
//!
//! The receiver makes an OFFER, the sender answers each offer with an ANSWER
//! and a fresh per-session QUIC stack. Blobs travel by copy-paste (through a
//! [`Console`] the CLI implements over the terminal) or by files (`--offer-file`,
//! `--answer-file`, `-` meaning stdin/stdout), so scripts and tests can drive
//! both sides. Files are followed as they grow: several offers appended to
//! one file start several sessions, and several answers in one file are told
//! apart by session id.
//!
//! A path back-end implements [`ManualPath`]: prepare local state and
//! describe it as a blob [`Body`], then connect given the peer's body.

use std::{
    collections::HashSet,
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use peerport_signaling::{
    blob::{scan_blocks, Blob, BlobError, Body, Expect, Kind},
    Mode,
};
use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, Mutex},
    task::JoinSet,
};
use tracing::{info, warn, Instrument};

use crate::transport::{Acceptor, DialError, Dialer, TunnelConnection};

/// How old a blob may be before it is refused.
pub const MAX_BLOB_AGE: Duration = Duration::from_secs(15 * 60);

/// Which side of the session (decides ICE roles and connection races).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Made the offer.
    Offerer,
    /// Answered.
    Answerer,
}

/// A path back-end for copy-paste signaling.
pub trait ManualPath: Send + Sync + 'static {
    /// Connection produced.
    type Conn: TunnelConnection;
    /// Local state between `prepare` and `connect` (endpoint, ICE agent, ...).
    type Prepared: Send + 'static;
    /// What lets both sides connect again after a lost session without a
    /// new exchange (`iroh-manual`: both endpoints stay up and know each
    /// other's id and addresses; `ice`: both QUIC endpoints stay on the
    /// selected pair). Paths that cannot return `None` from `connect`.
    type Rejoin: Send + Sync + 'static;
    /// Mode written into blobs.
    const MODE: Mode;
    /// Create per-session local state and describe it.
    fn prepare(
        &self,
        side: Side,
    ) -> impl Future<Output = Result<(Self::Prepared, Body), PathError>> + Send;
    /// Connect to the peer described by `peer` (authenticating it by what the blob pins).
    ///
    /// `peer_deadline`: until when the peer may take to show up at all (a
    /// copy-paste answerer waits as long as the offer is valid, because the
    /// person may paste the answer minutes later); the connect timeout runs
    /// from the peer's first sign of life. `None`: the connect timeout alone.
    fn connect(
        &self,
        prepared: Self::Prepared,
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> impl Future<Output = Result<(Self::Conn, Option<Self::Rejoin>), PathError>> + Send;
    /// Connect again to the same peer through `rejoin`, within `limit`.
    fn rejoin(
        &self,
        rejoin: &Self::Rejoin,
        side: Side,
        limit: Duration,
    ) -> impl Future<Output = Result<Self::Conn, RejoinError>> + Send;
    /// Release what `rejoin` holds (an endpoint).
    fn release(&self, rejoin: Self::Rejoin) -> impl Future<Output = ()> + Send;
}

/// Why a copy-paste path could not prepare its side or connect: typed, so
/// that a receiver stops on settings that can never work and tries again
/// on a failure that may pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// This host's settings cannot work (a `--stun-server` or
    /// `--turn-server` that does not parse, `--relay-only` without a TURN
    /// server, a QUIC configuration the stack refuses): a person must fix
    /// them.
    #[error("{0}")]
    Setup(String),
    /// The peer's blob does not fit this mode (another mode's body, an
    /// invalid key): exchange fresh blobs.
    #[error("{0}")]
    Blob(String),
    /// No connection this time (a port in use, no candidate, ICE or the
    /// QUIC handshake failed or timed out, the peer never showed up):
    /// trying again may work.
    #[error("{0}")]
    Unreachable(String),
}

impl From<PathError> for DialError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Setup(m) => DialError::Fatal(m),
            // a new offer is a fresh exchange
            PathError::Blob(m) | PathError::Unreachable(m) => DialError::Unreachable(m),
        }
    }
}

/// Why connecting again without a new exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RejoinError {
    /// What happened.
    pub message: String,
    /// Trying again cannot help (this host's address is gone): make a
    /// fresh offer at once.
    pub permanent: bool,
}

impl RejoinError {
    /// A failure that another try may fix.
    pub fn again(message: impl Into<String>) -> Self {
        RejoinError {
            message: message.into(),
            permanent: false,
        }
    }
}

/// How long a sender keeps a lost session's endpoint for its receiver to
/// reconnect without a new exchange.
pub const REJOIN_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Failed rejoins after which a receiver makes a fresh offer instead.
const REJOIN_ATTEMPTS: u32 = 3;

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the copy-paste modes talk to a person. The library never touches
/// the terminal itself: the CLI implements this over stderr (prompts),
/// stdout (blobs to copy) and stdin (pastes); an embedding program can
/// implement it over its own UI, or use files instead.
pub trait Console: Send + Sync + 'static {
    /// Tell the person something (a prompt or a hint), one or more lines.
    fn say(&self, text: &str);
    /// Show a blob (armored text) for the person to copy.
    fn show(&self, armor: &str) -> std::io::Result<()>;
    /// The next line the person pasted or typed; `None` once input is closed.
    fn read_line(&self) -> futures::future::BoxFuture<'_, Option<Vec<u8>>>;
}

/// A [`Console`] with no person behind it: prompts go to the log, blobs
/// are refused, input is closed. For programs that use blob files only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoConsole;

impl Console for NoConsole {
    fn say(&self, text: &str) {
        info!("{text}");
    }
    fn show(&self, _armor: &str) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "no console to show a blob on: use a blob file",
        ))
    }
    fn read_line(&self) -> futures::future::BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async { None })
    }
}

/// Where blobs come from.
#[derive(Clone)]
pub enum BlobSource {
    /// Pasted by a person at the console.
    Console(Arc<dyn Console>),
    /// A file, followed as it grows.
    File(PathBuf),
}

/// Where blobs go.
#[derive(Clone)]
pub enum BlobSink {
    /// Shown to a person at the console.
    Console(Arc<dyn Console>),
    /// A file (appended to).
    File(PathBuf),
}

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobSource::Console(_) => f.write_str("console"),
            BlobSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::fmt::Debug for BlobSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobSink::Console(_) => f.write_str("console"),
            BlobSink::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl BlobSource {
    /// A file, or the console when absent or `-`.
    pub fn from_arg(p: Option<&PathBuf>, console: &Arc<dyn Console>) -> Self {
        match p {
            Some(p) if p.as_os_str() != "-" => BlobSource::File(p.clone()),
            _ => BlobSource::Console(console.clone()),
        }
    }
}

impl BlobSink {
    /// A file, or the console when absent or `-`.
    pub fn from_arg(p: Option<&PathBuf>, console: &Arc<dyn Console>) -> Self {
        match p {
            Some(p) if p.as_os_str() != "-" => BlobSink::File(p.clone()),
            _ => BlobSink::Console(console.clone()),
        }
    }

    /// Write one blob (armored). Files are appended to.
    pub async fn write(&self, blob: &Blob) -> std::io::Result<()> {
        let armor = blob.to_armor();
        match self {
            BlobSink::Console(c) => c.show(&armor),
            BlobSink::File(p) => {
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await?;
                f.write_all(armor.as_bytes()).await?;
                f.flush().await
            }
        }
    }

    /// Tell the person something, if a person watches this sink.
    fn say(&self, text: &str) {
        match self {
            BlobSink::Console(c) => c.say(text),
            BlobSink::File(_) => info!("{text}"),
        }
    }
}

/// Reads armored blocks as they arrive.
///
/// Bytes that are not UTF-8 text are skipped with a warning (they never
/// disable the source); a file is followed as it grows, and read again from
/// the start when it is truncated or rewritten.
pub struct BlobReader {
    source: BlobSource,
    pending: String,
    undecoded: Vec<u8>,
    file_offset: u64,
    ready: std::collections::VecDeque<Result<Blob, BlobError>>,
}

/// Append the UTF-8 text at the front of `raw` to `out`, skipping invalid
/// bytes; an incomplete character at the very end stays in `raw` for the
/// next read. Returns how many bytes were skipped.
pub fn decode_utf8_lossy(raw: &mut Vec<u8>, out: &mut String) -> usize {
    let mut skipped = 0;
    let mut pos = 0;
    loop {
        match std::str::from_utf8(&raw[pos..]) {
            Ok(s) => {
                out.push_str(s);
                pos = raw.len();
                break;
            }
            Err(e) => {
                let valid = pos + e.valid_up_to();
                // from_utf8 said these bytes are valid
                out.push_str(std::str::from_utf8(&raw[pos..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        skipped += n;
                        pos = valid + n;
                    }
                    None => {
                        pos = valid; // incomplete character at the end: wait for more
                        break;
                    }
                }
            }
        }
    }
    raw.drain(..pos);
    skipped
}

impl BlobReader {
    /// Read from `source`.
    pub fn new(source: BlobSource) -> Self {
        BlobReader {
            source,
            pending: String::new(),
            undecoded: Vec::new(),
            file_offset: 0,
            ready: Default::default(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.undecoded.extend_from_slice(bytes);
        let skipped = decode_utf8_lossy(&mut self.undecoded, &mut self.pending);
        if skipped > 0 {
            let from = match &self.source {
                BlobSource::Console(_) => "the pasted input".to_string(),
                BlobSource::File(p) => p.display().to_string(),
            };
            warn!("skipped {skipped} byte(s) in {from} that are not text; blobs around them are still read");
        }
    }

    /// Tell the person about a block that was not accepted: at a prompt,
    /// with what to paste again; in a followed file (which may be shared
    /// with other sessions), as a log line.
    fn complain(&self, e: &BlobError, what: &str) {
        match &self.source {
            BlobSource::Console(c) => c.say(&format!("error: {e}\npaste the {what} again:")),
            BlobSource::File(p) if *e == BlobError::WrongSession => info!(
                "skipping an {what} in {} that belongs to another session",
                p.display()
            ),
            BlobSource::File(p) => warn!("ignoring a block in {}: {e}", p.display()),
        }
    }

    /// New bytes of the followed file (all of it again if it shrank).
    async fn read_file_tail(&mut self, p: &std::path::Path) -> Option<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::open(p).await.ok()?;
        let len = f.metadata().await.ok()?.len();
        if len < self.file_offset {
            // truncated or rewritten: start over
            self.file_offset = 0;
            self.pending.clear();
            self.undecoded.clear();
        }
        if len == self.file_offset {
            return None;
        }
        f.seek(std::io::SeekFrom::Start(self.file_offset))
            .await
            .ok()?;
        let mut buf = Vec::new();
        // at most 1 MiB per read: the rest comes next time
        (&mut f).take(1 << 20).read_to_end(&mut buf).await.ok()?;
        self.file_offset += buf.len() as u64;
        Some(buf)
    }

    /// The next complete block, decoded and checked against `expect`
    /// (with `now` refreshed). `None` when the console's input is closed.
    pub async fn next(&mut self, expect: &Expect) -> Option<Result<Blob, BlobError>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            match self.source.clone() {
                BlobSource::Console(c) => match c.read_line().await {
                    None => return None,
                    Some(line) => self.feed(&line),
                },
                BlobSource::File(p) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match self.read_file_tail(&p).await {
                        Some(bytes) => self.feed(&bytes),
                        None => continue,
                    }
                }
            }
            let e = Expect {
                now: unix_now(),
                ..*expect
            };
            let (blobs, used) = scan_blocks(&self.pending, &e);
            self.pending.drain(..used);
            if self.pending.len() > 1 << 20 {
                self.pending.clear(); // no block in a megabyte of text: drop it
            }
            self.ready.extend(blobs);
        }
    }
}

fn expect(kind: Kind, mode: Mode, session: Option<[u8; 8]>) -> Expect {
    Expect {
        kind,
        mode,
        session,
        now: unix_now(),
        max_age: MAX_BLOB_AGE.as_secs(),
    }
}

/// Receiver side of a copy-paste mode: each [`Dialer::dial`] writes a
/// fresh OFFER, waits for the matching ANSWER (asking again after a bad
/// paste) and connects. After a lost session it first connects again to
/// the same sender endpoint without a person (it is unattended while it
/// holds that way back), and makes a fresh offer when that fails.
pub struct ManualDialer<P: ManualPath> {
    path: P,
    offers: BlobSink,
    reader: BlobReader,
    answers_from: String,
    limit: Duration,
    /// The last session's way back to the sender, and failed tries.
    rejoin: Option<(P::Rejoin, u32)>,
    rejoin_limit: Duration,
}

impl<P: ManualPath> ManualDialer<P> {
    /// Offers go to `offers`, answers are read from `answers`; each
    /// exchange must complete within `limit`. After a lost session the
    /// dialer first reconnects without a new exchange (each try within
    /// `rejoin_limit`), and makes a fresh
    /// offer after a few failed tries.
    pub fn new(
        path: P,
        offers: BlobSink,
        answers: BlobSource,
        limit: Duration,
        rejoin_limit: Duration,
    ) -> Self {
        let answers_from = match &answers {
            BlobSource::Console(_) => "then paste the sender's ANSWER here:".to_string(),
            BlobSource::File(p) => format!("waiting for the ANSWER in {}", p.display()),
        };
        ManualDialer {
            path,
            offers,
            reader: BlobReader::new(answers),
            answers_from,
            limit,
            rejoin: None,
            rejoin_limit,
        }
    }

    async fn try_rejoin(&mut self) -> Option<Result<P::Conn, DialError>> {
        let (state, failures) = self.rejoin.as_mut()?;
        match self
            .path
            .rejoin(state, Side::Offerer, self.rejoin_limit)
            .await
        {
            Ok(conn) => {
                *failures = 0;
                Some(Ok(conn))
            }
            Err(e) => {
                *failures += 1;
                if *failures >= REJOIN_ATTEMPTS || e.permanent {
                    if let Some((state, _)) = self.rejoin.take() {
                        self.path.release(state).await;
                    }
                    warn!("could not reconnect without a new exchange ({e}); making a fresh offer");
                }
                Some(Err(DialError::Unreachable(format!(
                    "reconnecting to the same sender endpoint failed: {e}"
                ))))
            }
        }
    }
}

impl<P: ManualPath> Dialer for ManualDialer<P> {
    type Conn = P::Conn;

    fn unattended(&self) -> bool {
        self.rejoin.is_some()
    }

    async fn dial(&mut self) -> Result<P::Conn, DialError> {
        match self.try_rejoin().await {
            None => {}
            // the way back is given up (this host was renumbered, or the
            // tries ran out): the fresh offer comes now, not after a backoff
            Some(Err(_)) if self.rejoin.is_none() => {}
            Some(r) => return r,
        }
        let (prepared, body) = self.path.prepare(Side::Offerer).await?;
        let session: [u8; 8] = rand::random();
        let offer = Blob {
            kind: Kind::Offer,
            session,
            created: unix_now(),
            body,
        };
        self.offers.say(&format!(
            "peerport receiver ({}): send this OFFER ({} characters) to the sender:",
            P::MODE,
            offer.to_armor().len()
        ));
        self.offers
            .write(&offer)
            .await
            .map_err(|e| DialError::Fatal(format!("cannot write the offer: {e}")))?;
        self.offers.say(&self.answers_from);
        let want = expect(Kind::Answer, P::MODE, Some(session));
        let reader = &mut self.reader;
        let answer = tokio::time::timeout(self.limit, async {
            loop {
                match reader.next(&want).await {
                    None => {
                        return Err(DialError::Fatal(
                            "input closed before an ANSWER arrived: paste the sender's answer"
                                .into(),
                        ))
                    }
                    Some(Ok(a)) => return Ok(a),
                    Some(Err(e)) => reader.complain(&e, "ANSWER"),
                }
            }
        })
        .await
        .map_err(|_| {
            DialError::Unreachable(format!(
                "no valid ANSWER within {} s: start again and exchange fresh blobs",
                self.limit.as_secs()
            ))
        })??;
        info!("answer accepted; connecting");
        let (conn, rejoin) = self
            .path
            .connect(prepared, answer.body, Side::Offerer, None)
            .await?;
        self.rejoin = rejoin.map(|r| (r, 0));
        Ok(conn)
    }

    async fn close(self) {
        if let Some((state, _)) = self.rejoin {
            self.path.release(state).await;
        }
    }
}

/// Most offers set up at once (each holds an ICE agent or endpoint while it
/// waits for its receiver); more are refused with a message until one ends.
pub const MAX_SETUPS: usize = 32;

/// Sender side: an [`Acceptor`] that answers every offer read from `offers`
/// with a fresh session; connections are set up concurrently.
pub struct ManualAcceptor<C> {
    rx: mpsc::Receiver<Result<C, String>>,
    input_closed: Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
    tasks: JoinSet<()>,
}

impl<C: TunnelConnection> ManualAcceptor<C> {
    /// Start reading offers and answering them.
    pub fn start<P: ManualPath<Conn = C>>(
        path: Arc<P>,
        offers: BlobSource,
        answers: BlobSink,
    ) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let input_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(
            answer_offers(
                path,
                offers,
                answers,
                tx,
                input_closed.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        ManualAcceptor {
            rx,
            input_closed,
            stop,
            tasks,
        }
    }

    /// Set when the acceptor ended because its standard input closed.
    pub fn input_closed_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.input_closed.clone()
    }
}

impl<C: TunnelConnection> Acceptor for ManualAcceptor<C> {
    type Conn = C;
    async fn accept(&mut self) -> Option<Result<C, String>> {
        self.rx.recv().await
    }

    /// Stop answering; close the endpoints kept for reconnects (bounded).
    async fn shutdown(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Session ids of the answers already in `sink`'s file: a restarted sender
/// does not answer those offers again.
async fn answered_sessions(sink: &BlobSink, mode: Mode) -> HashSet<[u8; 8]> {
    let BlobSink::File(p) = sink else {
        return HashSet::new();
    };
    let Ok(bytes) = tokio::fs::read(p).await else {
        return HashSet::new();
    };
    let mut raw = bytes;
    let mut text = String::new();
    decode_utf8_lossy(&mut raw, &mut text);
    // an expired answer answered an offer that has expired too
    let (blobs, _) = scan_blocks(&text, &expect(Kind::Answer, mode, None));
    blobs
        .into_iter()
        .filter_map(|b| b.ok().map(|b| b.session))
        .collect()
}

async fn answer_offers<P: ManualPath>(
    path: Arc<P>,
    offers: BlobSource,
    answers: BlobSink,
    tx: mpsc::Sender<Result<P::Conn, String>>,
    input_closed: Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) {
    let console = match &offers {
        BlobSource::Console(c) => Some(c.clone()),
        BlobSource::File(_) => None,
    };
    let mut reader = BlobReader::new(offers);
    let mut seen = answered_sessions(&answers, P::MODE).await;
    if !seen.is_empty() {
        info!(
            answered = seen.len(),
            "offers already answered in the answer file are not answered again"
        );
    }
    let answers = Arc::new(Mutex::new(answers));
    // setting up holds a slot; a set-up session that can rejoin keeps its
    // task (not its slot) while its receiver may come back
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SETUPS));
    let mut setups = JoinSet::new();
    let want = expect(Kind::Offer, P::MODE, None);
    if let Some(c) = &console {
        c.say("paste a receiver's OFFER (several, one after another, start several sessions):");
    }
    loop {
        let r = tokio::select! {
            // the reader is dropped on the way out: a partial line may go
            _ = stop.cancelled() => break,
            r = reader.next(&want) => match r {
                Some(r) => r,
                None => {
                    if let Some(c) = &console {
                        input_closed.store(true, std::sync::atomic::Ordering::SeqCst);
                        c.say("input closed: no more offers can be read; sessions under way continue");
                    }
                    break;
                }
            },
        };
        let offer = match r {
            Ok(o) => o,
            Err(e) => {
                reader.complain(&e, "OFFER");
                continue;
            }
        };
        if !seen.insert(offer.session) {
            info!(
                session = %hex::encode(offer.session),
                "skipping an offer that was already answered"
            );
            continue;
        }
        while setups.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(
                "refusing an offer: {MAX_SETUPS} offers are already waiting for their receivers; try again when one has connected or expired"
            );
            continue;
        };
        let (path, answers, tx, stop) = (path.clone(), answers.clone(), tx.clone(), stop.clone());
        let span = tracing::info_span!("setup", session = %hex::encode(offer.session));
        setups.spawn(
            async move {
                let r = tokio::select! {
                    r = setup_session(&*path, offer, &answers) => r,
                    _ = stop.cancelled() => return,
                };
                drop(slot);
                let (result, rejoin) = match r {
                    Ok((conn, rejoin)) => (Ok(conn), rejoin),
                    Err(e) => (Err(e.to_string()), None),
                };
                let watch = result.as_ref().ok().cloned();
                let handed_over = tx.send(result).await.is_ok();
                if let Some(rejoin) = rejoin {
                    match watch {
                        Some(conn) if handed_over => {
                            keep_rejoining(&*path, conn, rejoin, &tx, &stop).await
                        }
                        _ => path.release(rejoin).await,
                    }
                }
            }
            .instrument(span),
        );
    }
    // input closed: finish the setups under way, then end
    while setups.join_next().await.is_some() {}
}

/// After a session's connection is lost (not closed on purpose), keep its
/// endpoint for [`REJOIN_WINDOW`] so its receiver can reconnect without a
/// new exchange; each reconnection is handed to the session loop.
async fn keep_rejoining<P: ManualPath>(
    path: &P,
    mut conn: P::Conn,
    rejoin: P::Rejoin,
    tx: &mpsc::Sender<Result<P::Conn, String>>,
    stop: &tokio_util::sync::CancellationToken,
) {
    loop {
        // until the connection is lost, then until its receiver is back
        let round = async {
            let reason = conn.closed().await;
            if matches!(
                reason,
                crate::transport::CloseReason::Peer { .. } | crate::transport::CloseReason::Local
            ) {
                return None;
            }
            info!(
                "session lost ({reason}); the receiver may reconnect to this endpoint for {} s",
                REJOIN_WINDOW.as_secs()
            );
            Some(path.rejoin(&rejoin, Side::Answerer, REJOIN_WINDOW).await)
        };
        // a resume over a newer connection (a fresh exchange) leaves this
        // one nothing to come back for: its endpoint goes now, not after
        // the window (each holds megabytes of receive buffers)
        let superseded = conn.superseded();
        let again = tokio::select! {
            r = round => r,
            _ = superseded.cancelled() => {
                info!("the session continues on a newer connection: releasing this one's endpoint");
                None
            }
            _ = stop.cancelled() => None,
        };
        match again {
            None => break,
            Some(Ok(c)) => {
                conn = c.clone();
                if tx.send(Ok(c)).await.is_err() {
                    break;
                }
            }
            Some(Err(e)) => {
                info!("the receiver did not come back: {e}");
                break;
            }
        }
    }
    path.release(rejoin).await;
}

async fn setup_session<P: ManualPath>(
    path: &P,
    offer: Blob,
    answers: &Mutex<BlobSink>,
) -> Result<(P::Conn, Option<P::Rejoin>), PathError> {
    let (prepared, body) = path.prepare(Side::Answerer).await?;
    let answer = Blob {
        kind: Kind::Answer,
        session: offer.session,
        created: unix_now(),
        body,
    };
    {
        let sink = answers.lock().await;
        if let BlobSink::Console(c) = &*sink {
            c.say("send this ANSWER back to the receiver:");
        }
        sink.write(&answer)
            .await
            .map_err(|e| PathError::Setup(format!("cannot write the answer: {e}")))?;
    }
    // the person may take minutes to carry the answer back: wait for the
    // receiver as long as its offer is valid
    let valid_for = (offer.created + MAX_BLOB_AGE.as_secs()).saturating_sub(unix_now());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(valid_for);
    path.connect(prepared, offer.body, Side::Answerer, Some(deadline))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_stop_a_receiver_other_failures_retry() {
        let m = || "x".to_string();
        assert!(matches!(
            DialError::from(PathError::Setup(m())),
            DialError::Fatal(_)
        ));
        for e in [PathError::Blob(m()), PathError::Unreachable(m())] {
            assert!(matches!(DialError::from(e), DialError::Unreachable(_)));
        }
    }

    #[test]
    fn invalid_utf8_is_skipped_and_split_characters_wait() {
        let mut raw = b"ab\xffcd\xe2\x82".to_vec();
        let mut out = String::new();
        assert_eq!(decode_utf8_lossy(&mut raw, &mut out), 1);
        assert_eq!(out, "abcd");
        assert_eq!(raw, b"\xe2\x82"); // first two bytes of the euro sign
        raw.extend_from_slice(b"\xac!");
        assert_eq!(decode_utf8_lossy(&mut raw, &mut out), 0);
        assert_eq!(out, "abcd\u{20ac}!");
        assert!(raw.is_empty());
    }
}
