//! The console the copy-paste modes show blobs on and read pastes from (the
//! CLI's terminal; none in tests and services).

use tracing::info;

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
