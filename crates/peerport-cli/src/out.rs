//! Standard output for the commands, safe in a pipe.
//!
//! Rust ignores SIGPIPE, so writing to a stdout whose reader went away
//! (`peerport status --watch | head -2`) fails with `BrokenPipe`, and
//! `println!` panics on that. The commands print through [`print`]
//! instead: a closed stdout becomes [`Closed`], which `main` ends quietly
//! with exit 0, like `git log | head`. SIGPIPE stays ignored on purpose: a
//! sender whose stdout reader goes away after the ticket must go on
//! serving its tunnel, so it ignores a failed write ([`print`]'s result).

use std::io::{ErrorKind, Write};

/// Standard output was closed by its reader: the command ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct Closed;

/// Write `text` to standard output and flush it. A closed stdout is
/// [`Closed`]; another failure says what could not be written.
pub fn print(text: impl AsRef<str>) -> anyhow::Result<()> {
    write_to(&mut std::io::stdout().lock(), text.as_ref())
}

/// [`print`] and a newline.
pub fn println(text: impl AsRef<str>) -> anyhow::Result<()> {
    print(format!("{}\n", text.as_ref()))
}

fn write_to(w: &mut impl Write, text: &str) -> anyhow::Result<()> {
    match w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Closed.into()),
        Err(e) => Err(anyhow::Error::new(e).context(
            "cannot write to standard output (check where it is redirected: a full disk?)",
        )),
    }
}

/// Write a line to standard error, like `eprintln!`, but never panic: a
/// closed or failing stderr (a pipe whose reader went away) loses the
/// line, and the process goes on serving (`eprintln!` would panic, and a
/// panic in a signal or session task stops that task for good).
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.write_all(b"\n"));
}

/// [`say_line`] without the newline (a prompt).
pub fn say_inline(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.flush());
}

/// `eprintln!` through [`say_line`].
macro_rules! say {
    () => { $crate::out::say_line(format_args!("")) };
    ($($t:tt)*) => { $crate::out::say_line(format_args!($($t)*)) };
}
pub(crate) use say;

/// Whether `e` (or a cause of it) is a closed stdout.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Closed>())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pipe(ErrorKind);

    impl Write for Pipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_closed_and_other_failures_are_errors() {
        let e = write_to(&mut Pipe(ErrorKind::BrokenPipe), "x").unwrap_err();
        assert!(is_closed(&e));
        assert!(is_closed(&e.context("status")));
        let e = write_to(&mut Pipe(ErrorKind::StorageFull), "x").unwrap_err();
        assert!(!is_closed(&e));
        assert!(e.to_string().contains("standard output"), "{e}");
        let mut v = Vec::new();
        write_to(&mut v, "ok\n").unwrap();
        assert_eq!(v, b"ok\n");
    }
}
