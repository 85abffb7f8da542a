//! Where blobs come from and go to: the console or files, followed as they
//! grow, decoded as UTF-8 that may arrive in pieces.

use std::{path::PathBuf, sync::Arc, time::Duration};

use peerport_signaling::{
    blob::{self, scan_blocks, Blob, BlobError, Expect, Incomplete, Kind},
    Mode,
};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::{console::Console, unix_now, MAX_BLOB_AGE};

/// How long a paste may pause before a block that is not whole is
/// explained: a paste arrives within milliseconds, a person reacts in
/// seconds.
pub const PASTE_QUIET: Duration = Duration::from_millis(1500);

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
    pub(super) fn say(&self, text: &str) {
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
    pub(super) source: BlobSource,
    pub(super) pending: String,
    pub(super) undecoded: Vec<u8>,
    pub(super) file_offset: u64,
    pub(super) ready: std::collections::VecDeque<Result<Blob, BlobError>>,
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

    /// Take bytes just read (a pasted line, a file's new tail): the text
    /// is kept until [`Self::take_blocks`] finds whole blocks in it.
    #[doc(hidden)] // pub for the fuzz target `paste_reader`
    pub fn feed(&mut self, bytes: &[u8]) {
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
    pub(super) fn complain(&self, e: &BlobError, what: &str) {
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
    pub(super) async fn read_file_tail(&mut self, p: &std::path::Path) -> Option<Vec<u8>> {
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

    /// The next line from the console. When a paste goes quiet for
    /// [`PASTE_QUIET`] without a whole block, says what is missing (a
    /// block cut off before its END line; base64 lines without their
    /// BEGIN/END lines, which are dropped), then goes on waiting: the read
    /// is never cancelled, so no half-read line is lost.
    async fn read_console(&mut self, c: &dyn Console, kind: Kind) -> Option<Vec<u8>> {
        let read = c.read_line();
        tokio::pin!(read);
        let mut told = false;
        loop {
            tokio::select! {
                line = &mut read => return line,
                _ = tokio::time::sleep(PASTE_QUIET), if !told => {
                    told = true;
                    let what = kind.label();
                    match blob::incomplete(&self.pending) {
                        Some(Incomplete::NoEnd) => c.say(&format!(
                            "the {what} block has not ended: no -----END PEERPORT {what}----- line arrived. Press Enter if it is there, or copy the whole block again"
                        )),
                        Some(Incomplete::Bare) => {
                            self.pending.clear();
                            c.say(&format!(
                                "error: these lines look like the inside of an {what} block without its -----BEGIN and -----END lines: copy the whole block, including those two lines\npaste the {what} again:"
                            ));
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// The next complete block, decoded and checked against `expect`
    /// (with `now` refreshed). `None` when the console's input is closed.
    pub async fn next(&mut self, expect: &Expect) -> Option<Result<Blob, BlobError>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            match self.source.clone() {
                BlobSource::Console(c) => match self.read_console(&*c, expect.kind).await {
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
            self.take_blocks(&Expect {
                now: unix_now(),
                ..*expect
            });
        }
    }

    /// Decode the whole blocks of the text fed so far (checked against
    /// `e`), queue them for [`Self::next`], and keep only the unfinished
    /// rest (dropped past a megabyte without a block).
    #[doc(hidden)] // pub for the fuzz target `paste_reader`
    pub fn take_blocks(&mut self, e: &Expect) {
        let (blobs, used) = scan_blocks(&self.pending, e);
        self.pending.drain(..used);
        if self.pending.len() > 1 << 20 {
            self.pending.clear(); // no block in a megabyte of text: drop it
        }
        self.ready.extend(blobs);
    }

    /// The blocks decoded and not yet returned by [`Self::next`] (each a
    /// blob or why not), taken out.
    #[doc(hidden)] // pub for the fuzz target `paste_reader`
    pub fn take_ready(&mut self) -> Vec<Result<Blob, BlobError>> {
        self.ready.drain(..).collect()
    }

    /// Bytes held: the undecoded tail of the input (at most an incomplete
    /// character) and the text not yet consumed by a block.
    #[doc(hidden)] // pub for the fuzz target `paste_reader`
    pub fn buffered(&self) -> (usize, usize) {
        (self.undecoded.len(), self.pending.len())
    }
}

pub(super) fn expect(kind: Kind, mode: Mode, session: Option<[u8; 8]>) -> Expect {
    Expect {
        kind,
        mode,
        session,
        now: unix_now(),
        max_age: MAX_BLOB_AGE.as_secs(),
    }
}
