//! The library core in one process: a real `Sender` and `Receiver` over
//! real quinn connections on 127.0.0.1 (`QuinnConnection::loopback_pair`), with
//! a dialer that makes a new pair per dial. Covers the receiver's session
//! loop (reconnect after a lost session, a refusal ends it, a local client
//! waits for the next session) without the binary or any signaling.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use peerport::{
    engine::{config::ResumeConfig, Authorizer, EngineConfig},
    transport::{
        quinn::QuinnConnection, AcceptError, Acceptor, DialError, Dialer, TunnelConnection,
    },
    Receiver, ReceiverError, Reconnect, Sender,
};
use peerport_testkit::{pattern, spawn_tcp_echo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

/// Hands the server side of each new pair to the sender.
struct PairDialer {
    to_sender: mpsc::Sender<QuinnConnection>,
    dials: Arc<AtomicUsize>,
    token: Option<Vec<u8>>,
}

impl Dialer for PairDialer {
    type Conn = QuinnConnection;
    fn unattended(&self) -> bool {
        true
    }
    fn token(&self) -> Option<Vec<u8>> {
        self.token.clone()
    }
    async fn dial(&mut self) -> Result<QuinnConnection, DialError> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let (client, server) = QuinnConnection::loopback_pair()
            .await
            .map_err(|e| DialError::Unreachable(e.to_string()))?;
        self.to_sender
            .send(server)
            .await
            .map_err(|_| DialError::Unreachable("sender gone".into()))?;
        Ok(client)
    }
    async fn close(self) {}
}

/// The sender side: every pair's server half; keeps them so a test can
/// drop a session from the sender's side.
struct PairAcceptor {
    rx: mpsc::Receiver<QuinnConnection>,
    live: Arc<Mutex<Vec<QuinnConnection>>>,
}

impl Acceptor for PairAcceptor {
    type Conn = QuinnConnection;
    async fn accept(&mut self) -> Option<Result<QuinnConnection, AcceptError>> {
        let c = self.rx.recv().await?;
        self.live.lock().unwrap().push(c.clone());
        Some(Ok(c))
    }
}

struct Setup {
    receiver: tokio::task::JoinHandle<Result<(), ReceiverError>>,
    local: std::net::SocketAddr,
    dials: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<QuinnConnection>>>,
    cancel: CancellationToken,
    _tasks: JoinSet<()>,
}

async fn setup(auth: Authorizer, token: Option<Vec<u8>>) -> Setup {
    let mut tasks = JoinSet::new();
    let echo = spawn_tcp_echo(&mut tasks).await.unwrap();
    setup_for(
        format!("tcp://{echo}"),
        "tcp://127.0.0.1:0",
        auth,
        token,
        tasks,
    )
    .await
}

/// A sender forwarding `source` and a receiver listening on `target`.
async fn setup_for(
    source: String,
    target: &str,
    auth: Authorizer,
    token: Option<Vec<u8>>,
    tasks: JoinSet<()>,
) -> Setup {
    setup_with(source, target, auth, token, tasks, EngineConfig::default()).await
}

/// [`setup_for`] with both sides' engine settings.
async fn setup_with(
    source: String,
    target: &str,
    auth: Authorizer,
    token: Option<Vec<u8>>,
    tasks: JoinSet<()>,
    engine: EngineConfig,
) -> Setup {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()),
        ))
        .with_test_writer()
        .try_init();
    let mut tasks = tasks;
    let (tx, rx) = mpsc::channel(4);
    let live = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let sender = Sender::builder(source.parse().unwrap())
        .auth(auth)
        .engine(engine.clone())
        .build();
    let acceptor = PairAcceptor {
        rx,
        live: live.clone(),
    };
    let c = cancel.clone();
    tasks.spawn(async move { sender.run(acceptor, c).await });
    let receiver = Receiver::builder(target.parse().unwrap())
        .engine(engine)
        .reconnect(Reconnect {
            first_delay: Duration::from_millis(100),
            ..Default::default()
        })
        .reconnect_wait(Duration::from_secs(20))
        .bind()
        .await
        .unwrap();
    let local = receiver.local_addr();
    let dials = Arc::new(AtomicUsize::new(0));
    let dialer = PairDialer {
        to_sender: tx,
        dials: dials.clone(),
        token,
    };
    let receiver = tokio::spawn(receiver.run(dialer, cancel.clone()));
    Setup {
        receiver,
        local,
        dials,
        live,
        cancel,
        _tasks: tasks,
    }
}

async fn echo(local: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut s = TcpStream::connect(local).await.unwrap();
        s.write_all(data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    })
    .await
    .expect("echo in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_session_is_redialed_and_serves_again() {
    let s = setup(Authorizer::transport_pinned(), None).await;
    assert_eq!(echo(s.local, b"one").await, b"one");
    // the sender side drops the session (like a restarted sender's reset)
    let first = s.live.lock().unwrap()[0].clone();
    first.close(0, "gone");
    // a client arriving while the loss is still on its way (or after it)
    // is carried by the next session, with what it sent meanwhile
    assert_eq!(echo(s.local, b"two").await, b"two");
    assert_eq!(s.dials.load(Ordering::SeqCst), 2);
    s.cancel.cancel();
    assert!(s.receiver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_ends_the_receiver_after_one_dial() {
    let s = setup(Authorizer::new(vec![7; 16], []), Some(vec![8; 16])).await;
    let r = tokio::time::timeout(Duration::from_secs(20), s.receiver)
        .await
        .expect("receiver ends")
        .unwrap();
    match r {
        Err(ReceiverError::Refused(m)) => assert!(m.contains("access token"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(s.dials.load(Ordering::SeqCst), 1);
}

/// An open TCP connection outlives the QUIC connection that carried it:
/// the session is lost (closed with a code that is not a normal end) twice,
/// once while idle and once in the middle of an 8 MiB echo, and every byte
/// arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connection_survives_lost_sessions() {
    let s = setup(Authorizer::transport_pinned(), None).await;
    let c = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(s.local))
        .await
        .unwrap()
        .unwrap();
    let (mut r, mut w) = c.into_split();
    let mut buf = [0u8; 6];
    w.write_all(b"before").await.unwrap();
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"before");
    let lose = |i: usize| {
        let c = s.live.lock().unwrap()[i].clone();
        c.close(99, "lost");
    };
    lose(0);
    w.write_all(b"after!").await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut buf))
        .await
        .expect("echo after the loss")
        .unwrap();
    assert_eq!(&buf, b"after!");

    let data = pattern(8 << 20, 7);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(32 * 1024) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        })
    };
    let mut got = Vec::with_capacity(data.len());
    let mut chunk = vec![0u8; 64 * 1024];
    let mut lost_once = false;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if !lost_once && got.len() > 2 << 20 {
                lost_once = true;
                lose(1);
            }
        }
    })
    .await
    .expect("the echo finishes");
    writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ after a resume");
    assert_eq!(s.dials.load(Ordering::SeqCst), 3);
    s.cancel.cancel();
    assert!(s.receiver.await.unwrap().is_ok());
}

/// A UDP service that answers every packet with the address it came from.
async fn spawn_udp_whoami(tasks: &mut JoinSet<()>) -> std::net::SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tasks.spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(from.to_string().as_bytes(), from).await;
        }
    });
    addr
}

/// Ask through the tunnel which address the service sees (retried: the
/// first packets may go out before the next session is up).
async fn seen_by_service(client: &UdpSocket, local: std::net::SocketAddr) -> String {
    let mut buf = vec![0u8; 256];
    for _ in 0..100 {
        client.send_to(b"who?", local).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await
        {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    panic!("no answer through the tunnel within 20 s");
}

/// A UDP client keeps its flow across a lost session: the service sees the
/// same source address before and after (a game server or WireGuard peer
/// keeps its mapping), and a second client gets a different one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flow_keeps_its_source_port_across_lost_sessions() {
    let mut tasks = JoinSet::new();
    let svc = spawn_udp_whoami(&mut tasks).await;
    let s = setup_for(
        format!("udp://{svc}"),
        "udp://127.0.0.1:0",
        Authorizer::transport_pinned(),
        None,
        tasks,
    )
    .await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = seen_by_service(&client, s.local).await;
    for i in 0..2 {
        let c = s.live.lock().unwrap()[i].clone();
        c.close(99, "lost");
        // wait for the next session before asking again
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while s.dials.load(Ordering::SeqCst) < i + 2 && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = seen_by_service(&client, s.local).await;
        assert_eq!(
            before,
            after,
            "the service saw a new source after loss {}",
            i + 1
        );
    }
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_ne!(seen_by_service(&other, s.local).await, before);
    s.cancel.cancel();
    assert!(s.receiver.await.unwrap().is_ok());
}

/// Once the other end's kernel has every byte written on `s`, close it
/// with a reset (`SO_LINGER` 0), as a service that closes with unread
/// data or aborts does.
async fn reset_after_sent(s: TcpStream) {
    use std::os::fd::AsRawFd;
    for _ in 0..2000 {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int (the unacknowledged bytes of the
        // send queue) for a socket descriptor we own.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if r != 0 || queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.set_zero_linger().unwrap();
    drop(s);
}

/// Read until the end or an error (a reset), and return what came.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the connection ends");
    got
}

/// An end that resets its connection right after writing (a service that
/// answers and aborts, a client that sends and aborts) still gets every
/// byte it wrote across, in both directions, with resumption on and off:
/// the tunnel waits (bounded) for the peer to deliver before it passes
/// the reset on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_before_a_reset_arrives() {
    let data = pattern(4 << 20, 11);
    for resume in [true, false] {
        let engine = EngineConfig {
            resume: ResumeConfig {
                window: if resume {
                    ResumeConfig::default().window
                } else {
                    Duration::ZERO
                },
                ..Default::default()
            },
            ..Default::default()
        };
        // the service writes, then resets; or reads until the client's reset
        let svc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let svc_addr = svc.local_addr().unwrap();
        let (got_tx, mut got_rx) = mpsc::channel(1);
        let mut tasks = JoinSet::new();
        let out = data.clone();
        tasks.spawn(async move {
            let (mut s, _) = svc.accept().await.unwrap();
            s.write_all(&out).await.unwrap();
            reset_after_sent(s).await;
            let (mut s, _) = svc.accept().await.unwrap();
            let got = read_until_closed(&mut s).await;
            let _ = got_tx.send(got).await;
        });
        let s = setup_with(
            format!("tcp://{svc_addr}"),
            "tcp://127.0.0.1:0",
            Authorizer::transport_pinned(),
            None,
            tasks,
            engine,
        )
        .await;
        let mut c = TcpStream::connect(s.local).await.unwrap();
        let got = read_until_closed(&mut c).await;
        assert_eq!(got.len(), data.len(), "service to client, resume {resume}");
        assert!(
            got == data,
            "service to client: bytes differ, resume {resume}"
        );

        let mut c = TcpStream::connect(s.local).await.unwrap();
        c.write_all(&data).await.unwrap();
        reset_after_sent(c).await;
        let got = tokio::time::timeout(Duration::from_secs(30), got_rx.recv())
            .await
            .expect("the service's connection ends")
            .unwrap();
        assert_eq!(got.len(), data.len(), "client to service, resume {resume}");
        assert!(
            got == data,
            "client to service: bytes differ, resume {resume}"
        );
        s.cancel.cancel();
        assert!(s.receiver.await.unwrap().is_ok());
    }
}
