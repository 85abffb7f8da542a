//! The control socket of `peerport sender|receiver` (crates/peerport-cli,
//! src/views/control.rs, compiled in from the CLI's source as is): a
//! local client's request line through the real socket server, and the
//! answer a `peerport status` client parses (a status snapshot, JSON).
//! Any request gets one line of JSON (a snapshot, or an error naming the
//! request) or, when it is not text, no answer; never a panic.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/peerport-cli/src/views/control.rs"]
mod control;

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use peerport::{
    engine::Ledger,
    status::{Info, Monitor, Snapshot},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    runtime::Runtime,
};
use tokio_util::sync::CancellationToken;

/// The runtime that serves the socket, and the socket's path.
fn server() -> &'static (Runtime, PathBuf) {
    static S: OnceLock<(Runtime, PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("fuzz.sock");
        let sock = rt.block_on(control::ControlSocket::bind(&path)).unwrap();
        let monitor = Monitor::new(Info::new("sender", "ice", "fuzz"), Ledger::new());
        rt.spawn(sock.serve(monitor, CancellationToken::new()));
        (rt, path)
    })
}

/// What a client that sends `request` and closes its side reads back.
fn ask(request: &[u8]) -> Vec<u8> {
    let (rt, path) = server();
    rt.block_on(async {
        let mut s = UnixStream::connect(path).await.unwrap();
        // the server reads one line of at most 256 bytes and may close
        // before taking the rest
        let _ = s.write_all(request).await;
        let _ = s.shutdown().await;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        answer
    })
}

fuzz_target!(|data: &[u8]| {
    // a `peerport status` client reading whatever answers on a socket
    let _ = serde_json::from_slice::<Snapshot>(data);

    let answer = ask(data);
    // the request is the first line of the first 256 bytes
    let head = &data[..data.len().min(256)];
    let line = match head.iter().position(|b| *b == b'\n') {
        Some(i) => &head[..=i],
        None => head,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        assert!(answer.is_empty(), "an answer to a request that is not text");
        return;
    };
    assert_eq!(answer.last(), Some(&b'\n'), "one line");
    assert_eq!(
        answer.iter().filter(|b| **b == b'\n').count(),
        1,
        "one line"
    );
    match line.trim() {
        "status" | "" => {
            serde_json::from_slice::<Snapshot>(&answer).expect("a status snapshot");
        }
        other => {
            let v: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
            let error = v["error"].as_str().expect("an error");
            assert!(error.contains(other), "{error}");
        }
    }
});
