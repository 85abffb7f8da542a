//! [`TunnelConnection`] for quinn 0.11 (the ICE modes), plus the TLS setup:
//! self-signed certificates pinned by SHA-256 fingerprint in both directions
//! (the server demands a client certificate).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use sha2::{Digest, Sha256};

use super::{
    CloseReason, ConnError, DatagramError, QuicSettings, TunnelConnection, TunnelRecv, TunnelSend,
};

/// ALPN of the quinn-based modes.
pub const ALPN: &[u8] = b"peerport/ice/1";
/// TLS server name used between pinned peers (never checked: the fingerprint is).
pub const SERVER_NAME: &str = "peerport";

/// A self-signed certificate and its key, fresh per session.
pub struct Identity {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// Generate a new certificate.
    pub fn generate() -> Result<Self, String> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| format!("cannot create a certificate: {e}"))?;
        Ok(Identity {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        })
    }

    /// SHA-256 of the certificate, put in the blob.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.cert.as_ref()).into()
    }
}

#[derive(Debug)]
struct Pinned {
    fp: [u8; 32],
    algs: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn check(&self, ee: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if Sha256::digest(ee.as_ref()).as_slice() == self.fp {
            Ok(())
        } else {
            tracing::warn!("refused a QUIC peer whose certificate is not the one in the blob");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Flow-control windows of the quinn modes (per stream, per connection):
/// 8 MiB lets one stream fill 82-84 % of a 200 Mbit/s path with 100 ms
/// RTT and 1 % loss (with the default `bbr`); much more lets a lossy burst
/// exceed quinn's 1024 reassembly gaps per stream, which aborts the
/// connection
/// (docs/benchmarks.md, "Long fat path").
pub const WINDOWS: (u64, u64) = (8 << 20, 32 << 20);

/// Same QUIC settings as the iroh mode: keep-alive below NAT timeouts
/// ([`QuicSettings::keep_alive`]), configurable idle timeout and congestion controller, thousands of
/// streams, large datagram buffers, [`WINDOWS`].
pub fn transport_config(q: &QuicSettings) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(q.keep_alive()));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(q.idle_timeout).ok());
    t.max_concurrent_bidi_streams(VarInt::from_u32(4096));
    t.datagram_receive_buffer_size(Some(8 << 20));
    t.datagram_send_buffer_size(8 << 20);
    // the highest priority with data sends first, streams of one priority
    // take turns (quinn's default, `send_fairness(true)`); bulk streams go
    // below the others, each turn of 256 KiB at a priority of its own
    // (crate::engine::priority)
    if q.bbr() {
        t.congestion_controller_factory(Arc::new(super::congestion::ModelBbrConfig));
    }
    let (stream, conn) = q.windows.unwrap_or(WINDOWS);
    t.stream_receive_window(VarInt::from_u64(stream).unwrap_or(VarInt::MAX));
    t.receive_window(VarInt::from_u64(conn).unwrap_or(VarInt::MAX));
    t.send_window(conn);
    Arc::new(t)
}

/// Client config that accepts only the server certificate `peer_fp`.
pub fn client_config(
    me: &Identity,
    peer_fp: [u8; 32],
    q: &QuicSettings,
) -> Result<quinn::ClientConfig, String> {
    let prov = super::tls::provider();
    let v = Arc::new(Pinned {
        fp: peer_fp,
        algs: prov.signature_verification_algorithms,
    });
    let mut c = rustls::ClientConfig::builder_with_provider(prov)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(v)
        .with_client_auth_cert(vec![me.cert.clone()], me.key.clone_key().into())
        .map_err(|e| e.to_string())?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(c).map_err(|e| e.to_string())?;
    let mut cc = quinn::ClientConfig::new(Arc::new(qc));
    cc.transport_config(transport_config(q));
    Ok(cc)
}

/// Server config that demands the client certificate `peer_fp`.
pub fn server_config(
    me: &Identity,
    peer_fp: [u8; 32],
    q: &QuicSettings,
) -> Result<quinn::ServerConfig, String> {
    let prov = super::tls::provider();
    let v = Arc::new(Pinned {
        fp: peer_fp,
        algs: prov.signature_verification_algorithms,
    });
    let mut s = rustls::ServerConfig::builder_with_provider(prov)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(v)
        .with_single_cert(vec![me.cert.clone()], me.key.clone_key().into())
        .map_err(|e| e.to_string())?;
    s.alpn_protocols = vec![ALPN.to_vec()];
    let qs = quinn::crypto::rustls::QuicServerConfig::try_from(s).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(qs));
    sc.transport_config(transport_config(q));
    // one peer per endpoint: a flood of forged Initials queues at most a
    // few attempts (quinn's default is 65,536, hundreds of MB)
    sc.max_incoming(16)
        .incoming_buffer_size(64 << 10)
        .incoming_buffer_size_total(1 << 20);
    Ok(sc)
}

/// Something that must live as long as the connection (an ICE agent on a relayed path).
pub type KeepAlive = Arc<dyn std::any::Any + Send + Sync>;

/// A quinn connection used as a tunnel. It owns its endpoint (one per
/// session) unless [`QuinnConnection::sharing_endpoint`] says that something
/// else keeps the endpoint for later connections (a copy-paste rejoin).
#[derive(Clone)]
pub struct QuinnConnection {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    owns_endpoint: bool,
    peer: String,
    path: tokio::sync::watch::Receiver<super::PathInfo>,
    keep: Option<KeepAlive>,
    on_close: Option<Arc<tokio_util::sync::CancellationToken>>,
    superseded: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for QuinnConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuinnConnection({}, {})", self.peer, *self.path.borrow())
    }
}

impl QuinnConnection {
    /// Wrap a connection. `path` is the pair it runs over; `keep` lives as long
    /// as the connection; `on_close` is cancelled at shutdown (stops helper tasks).
    pub fn new(
        conn: quinn::Connection,
        endpoint: quinn::Endpoint,
        peer_fp: [u8; 32],
        path: super::PathInfo,
        keep: Option<KeepAlive>,
        on_close: Option<tokio_util::sync::CancellationToken>,
    ) -> Self {
        QuinnConnection {
            conn,
            endpoint,
            owns_endpoint: true,
            peer: hex::encode(peer_fp),
            path: tokio::sync::watch::channel(path).1,
            keep,
            on_close: on_close.map(Arc::new),
            superseded: Default::default(),
        }
    }

    /// The path follows `path` (an ICE session that moves from a relay to
    /// a punched 5-tuple); each change is logged by `watch_path`.
    pub fn following(mut self, path: tokio::sync::watch::Receiver<super::PathInfo>) -> Self {
        self.path = path;
        self
    }

    /// The endpoint outlives this connection: its owner closes it, and
    /// [`TunnelConnection::shutdown`] leaves it alone.
    pub fn sharing_endpoint(mut self) -> Self {
        self.owns_endpoint = false;
        self
    }

    /// A connected pair (client, server) in this process on 127.0.0.1,
    /// with peerport's transport settings and pinned certificates: for
    /// tests and benchmarks of code written over [`TunnelConnection`].
    pub async fn loopback_pair() -> std::io::Result<(QuinnConnection, QuinnConnection)> {
        use std::net::{Ipv4Addr, SocketAddr};
        let quic = QuicSettings::default();
        let (a, b) = (
            Identity::generate().map_err(std::io::Error::other)?,
            Identity::generate().map_err(std::io::Error::other)?,
        );
        let server_cfg =
            server_config(&b, a.fingerprint(), &quic).map_err(std::io::Error::other)?;
        let client_cfg =
            client_config(&a, b.fingerprint(), &quic).map_err(std::io::Error::other)?;
        let server =
            quinn::Endpoint::server(server_cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let client = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let connecting = client
            .connect_with(client_cfg, server.local_addr()?, SERVER_NAME)
            .map_err(std::io::Error::other)?;
        let incoming = async {
            let incoming = server.accept().await.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "no connection")
            })?;
            incoming.await.map_err(std::io::Error::other)
        };
        let (cc, sc) = tokio::try_join!(
            async { connecting.await.map_err(std::io::Error::other) },
            incoming
        )?;
        let path = super::PathInfo::direct(server.local_addr()?);
        Ok((
            QuinnConnection::new(cc, client, b.fingerprint(), path.clone(), None, None),
            QuinnConnection::new(sc, server, a.fingerprint(), path, None, None),
        ))
    }
}

impl TunnelSend for SendStream {
    fn reset(&mut self, code: u32) {
        let _ = SendStream::reset(self, VarInt::from_u32(code));
    }

    fn set_priority(&mut self, priority: i32) {
        let _ = SendStream::set_priority(self, priority);
    }

    async fn write_bytes(&mut self, data: Bytes) -> std::io::Result<()> {
        self.write_chunk(data).await.map_err(std::io::Error::from)
    }

    async fn acked(&mut self) {
        let _ = self.stopped().await;
    }
}

impl TunnelRecv for RecvStream {
    fn stop(&mut self, code: u32) {
        let _ = RecvStream::stop(self, VarInt::from_u32(code));
    }

    async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> std::io::Result<Option<usize>> {
        RecvStream::read_chunks(self, bufs)
            .await
            .map_err(std::io::Error::from)
    }
}

impl TunnelConnection for QuinnConnection {
    type Send = SendStream;
    type Recv = RecvStream;

    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnError> {
        self.conn
            .open_bi()
            .await
            .map_err(|e| ConnError::Lost(close_reason(e)))
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnError> {
        self.conn
            .accept_bi()
            .await
            .map_err(|e| ConnError::Lost(close_reason(e)))
    }

    async fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        self.conn
            .send_datagram_wait(data)
            .await
            .map_err(datagram_error)
    }

    async fn read_datagram(&self) -> Result<Bytes, ConnError> {
        self.conn
            .read_datagram()
            .await
            .map_err(|e| ConnError::Lost(close_reason(e)))
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    async fn closed(&self) -> CloseReason {
        close_reason(self.conn.closed().await)
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
    }

    async fn shutdown(&self) {
        if !self.owns_endpoint {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.endpoint.close(VarInt::from_u32(0), b"");
        if let Some(t) = &self.on_close {
            t.cancel();
        }
        let _ = &self.keep;
    }

    fn peer_id(&self) -> String {
        self.peer.clone()
    }

    fn superseded(&self) -> tokio_util::sync::CancellationToken {
        self.superseded.clone()
    }

    fn path(&self) -> super::PathInfo {
        self.path.borrow().clone()
    }

    fn stats(&self) -> super::ConnStats {
        let s = self.conn.stats();
        super::ConnStats {
            rtt: s.path.rtt,
            min_rtt: Some(s.path.min_rtt),
            cwnd: s.path.cwnd,
            congestion_events: s.path.congestion_events,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            lost_bytes: s.path.lost_bytes,
            tx_bytes: s.udp_tx.bytes,
            rx_bytes: s.udp_rx.bytes,
            mtu: s.path.current_mtu,
        }
    }

    async fn watch_path(&self) {
        // an ICE pair is fixed once selected, unless a punch moves the
        // connection off its relay (one change, logged like iroh's)
        let mut path = self.path.clone();
        path.mark_unchanged();
        let changes = async {
            while path.changed().await.is_ok() {
                let now = path.borrow_and_update().clone();
                tracing::info!(target: crate::EVENT, path = %now.kind, "path selected: {now}");
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = self.conn.closed() => {}
            () = changes => {}
        }
    }

    async fn path_gone(&self) -> String {
        // a direct ICE pair's socket is bound to one address of this host;
        // quinn cannot move the connection to another. A relay pair (its
        // ICE agent kept in `keep`) has no local address of its own.
        match self.endpoint.local_addr().map(|a| a.ip()) {
            Ok(ip) if self.keep.is_none() && !ip.is_unspecified() => {
                crate::net::watch_address(ip).await
            }
            _ => std::future::pending().await,
        }
    }
}

super::stack_errors!(quinn::ConnectionError, quinn::SendDatagramError);
