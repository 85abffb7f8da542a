//! Copy-paste signaling shared by `iroh-manual` and `ice`.
//!
//! The receiver makes an OFFER, the sender answers each offer with an ANSWER
//! and a fresh per-session QUIC stack. Blobs travel by copy-paste (stdin and
//! stdout, with prompts on stderr) or by files (`--offer-file`,
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
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::{mpsc, Mutex},
    task::JoinSet,
};
use tracing::{info, warn, Instrument};

use crate::transport::{Acceptor, TunnelConnection};

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
    /// Mode written into blobs.
    const MODE: Mode;
    /// Create per-session local state and describe it.
    fn prepare(
        &self,
        side: Side,
    ) -> impl Future<Output = Result<(Self::Prepared, Body), String>> + Send;
    /// Connect to the peer described by `peer` (authenticating it by what the blob pins).
    fn connect(
        &self,
        prepared: Self::Prepared,
        peer: Body,
        side: Side,
    ) -> impl Future<Output = Result<Self::Conn, String>> + Send;
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where blobs come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// Standard input.
    Stdin,
    /// A file, followed as it grows.
    File(PathBuf),
}

/// Where blobs go.
#[derive(Debug, Clone)]
pub enum BlobSink {
    /// Standard output.
    Stdout,
    /// A file (appended to).
    File(PathBuf),
}

impl BlobSource {
    /// `-` or absent means stdin.
    pub fn from_arg(p: Option<&PathBuf>) -> Self {
        match p {
            Some(p) if p.as_os_str() != "-" => BlobSource::File(p.clone()),
            _ => BlobSource::Stdin,
        }
    }
}

impl BlobSink {
    /// `-` or absent means stdout.
    pub fn from_arg(p: Option<&PathBuf>) -> Self {
        match p {
            Some(p) if p.as_os_str() != "-" => BlobSink::File(p.clone()),
            _ => BlobSink::Stdout,
        }
    }

    /// Write one blob (armored). Files are appended to.
    pub async fn write(&self, blob: &Blob) -> std::io::Result<()> {
        let armor = blob.to_armor();
        match self {
            BlobSink::Stdout => {
                let mut out = tokio::io::stdout();
                out.write_all(armor.as_bytes()).await?;
                out.flush().await
            }
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
}

/// Reads armored blocks as they arrive.
pub struct BlobReader {
    source: BlobSource,
    pending: String,
    file_offset: usize,
    stdin: Option<tokio::io::Lines<BufReader<tokio::io::Stdin>>>,
    ready: std::collections::VecDeque<Result<Blob, BlobError>>,
}

impl BlobReader {
    /// Read from `source`.
    pub fn new(source: BlobSource) -> Self {
        BlobReader {
            source,
            pending: String::new(),
            file_offset: 0,
            stdin: None,
            ready: Default::default(),
        }
    }

    /// The next complete block, decoded and checked against `expect`
    /// (with `now` refreshed). `None` when stdin is closed.
    pub async fn next(&mut self, expect: &Expect) -> Option<Result<Blob, BlobError>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            match &self.source {
                BlobSource::Stdin => {
                    let lines = self
                        .stdin
                        .get_or_insert_with(|| BufReader::new(tokio::io::stdin()).lines());
                    match lines.next_line().await {
                        Ok(Some(l)) => {
                            self.pending.push_str(&l);
                            self.pending.push('\n');
                        }
                        _ => return None,
                    }
                }
                BlobSource::File(p) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let Ok(text) = tokio::fs::read_to_string(p).await else {
                        continue;
                    };
                    if text.len() < self.file_offset {
                        self.file_offset = 0; // truncated/rewritten: start over
                    }
                    self.pending.push_str(&text[self.file_offset..]);
                    self.file_offset = text.len();
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

/// Receiver side: offer, wait for the matching answer (asking again after a
/// bad paste), connect. Bounded by `limit`.
pub async fn receiver_connect<P: ManualPath>(
    path: &P,
    offers: BlobSink,
    answers: BlobSource,
    limit: Duration,
) -> anyhow::Result<P::Conn> {
    let (prepared, body) = path
        .prepare(Side::Offerer)
        .await
        .map_err(anyhow::Error::msg)?;
    let session: [u8; 8] = rand::random();
    let offer = Blob {
        kind: Kind::Offer,
        session,
        created: unix_now(),
        body,
    };
    eprintln!(
        "peerport receiver ({}): send this OFFER ({} characters) to the sender:",
        P::MODE,
        offer.to_armor().len()
    );
    offers.write(&offer).await?;
    match &answers {
        BlobSource::Stdin => eprintln!("then paste the sender's ANSWER here:"),
        BlobSource::File(p) => eprintln!("waiting for the ANSWER in {}", p.display()),
    }
    let mut reader = BlobReader::new(answers);
    let want = expect(Kind::Answer, P::MODE, Some(session));
    let answer = tokio::time::timeout(limit, async {
        loop {
            match reader.next(&want).await {
                None => anyhow::bail!(
                    "input closed before an ANSWER arrived: paste the sender's answer"
                ),
                Some(Ok(a)) => return Ok(a),
                Some(Err(BlobError::WrongSession)) => {
                    tracing::debug!("skipping an answer for another session")
                }
                Some(Err(e)) => eprintln!("error: {e}\npaste the ANSWER again:"),
            }
        }
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "no valid ANSWER within {} s: start again and exchange fresh blobs",
            limit.as_secs()
        )
    })??;
    info!("answer accepted; connecting");
    path.connect(prepared, answer.body, Side::Offerer)
        .await
        .map_err(anyhow::Error::msg)
}

/// Sender side: an [`Acceptor`] that answers every offer read from `offers`
/// with a fresh session; connections are set up concurrently.
pub struct ManualAcceptor<C> {
    rx: mpsc::Receiver<Result<C, String>>,
    _tasks: JoinSet<()>,
}

impl<C: TunnelConnection> ManualAcceptor<C> {
    /// Start reading offers and answering them.
    pub fn start<P: ManualPath<Conn = C>>(
        path: Arc<P>,
        offers: BlobSource,
        answers: BlobSink,
    ) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut tasks = JoinSet::new();
        tasks.spawn(answer_offers(path, offers, answers, tx).in_current_span());
        ManualAcceptor { rx, _tasks: tasks }
    }
}

impl<C: TunnelConnection> Acceptor for ManualAcceptor<C> {
    type Conn = C;
    async fn accept(&mut self) -> Option<Result<C, String>> {
        self.rx.recv().await
    }
}

async fn answer_offers<P: ManualPath>(
    path: Arc<P>,
    offers: BlobSource,
    answers: BlobSink,
    tx: mpsc::Sender<Result<P::Conn, String>>,
) {
    let prompt = matches!(offers, BlobSource::Stdin);
    let mut reader = BlobReader::new(offers);
    let answers = Arc::new(Mutex::new(answers));
    let mut seen = HashSet::new();
    let mut setups = JoinSet::new();
    let want = expect(Kind::Offer, P::MODE, None);
    if prompt {
        eprintln!("paste a receiver's OFFER (several, one after another, start several sessions):");
    }
    while let Some(r) = reader.next(&want).await {
        let offer = match r {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}\npaste the OFFER again:");
                continue;
            }
        };
        if !seen.insert(offer.session) {
            warn!("ignoring a repeated offer for a session already answered");
            continue;
        }
        let (path, answers, tx) = (path.clone(), answers.clone(), tx.clone());
        let span = tracing::info_span!("setup", session = %hex::encode(offer.session));
        setups.spawn(
            async move {
                let r = setup_session(&*path, offer, &answers).await;
                let _ = tx.send(r).await;
            }
            .instrument(span),
        );
        while setups.try_join_next().is_some() {}
    }
    // input closed: finish the setups under way, then end
    while setups.join_next().await.is_some() {}
}

async fn setup_session<P: ManualPath>(
    path: &P,
    offer: Blob,
    answers: &Mutex<BlobSink>,
) -> Result<P::Conn, String> {
    let (prepared, body) = path.prepare(Side::Answerer).await?;
    let answer = Blob {
        kind: Kind::Answer,
        session: offer.session,
        created: unix_now(),
        body,
    };
    {
        let sink = answers.lock().await;
        if matches!(*sink, BlobSink::Stdout) {
            eprintln!("send this ANSWER back to the receiver:");
        }
        sink.write(&answer)
            .await
            .map_err(|e| format!("cannot write the answer: {e}"))?;
    }
    path.connect(prepared, offer.body, Side::Answerer).await
}
