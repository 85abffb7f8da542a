//! The receiver's SOCKS5 front (`--target socks5://127.0.0.1:1080`): local
//! clients name their destination with a SOCKS5 CONNECT (no
//! authentication: the listener is local), the sender's `--allow` rules
//! decide, and the client gets a SOCKS5 reply that says how it went. The
//! wire format is the `socks5-proto` crate's.

use std::time::Duration;

use socks5_proto::{handshake, Address, Command, Reply, Request, Response};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::proto::header::Status;

/// Longest a local client may take to say where it goes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read a client's greeting and CONNECT request; its destination, or why
/// not (the client has been told, where SOCKS5 has a word for it).
pub async fn accept(stream: &mut TcpStream) -> Result<(String, u16), String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(stream)).await {
        Ok(r) => r,
        Err(_) => Err("the SOCKS5 client said nothing in time".into()),
    }
}

/// [`accept`] without its timeout, on any byte stream.
#[doc(hidden)] // pub for the fuzz target `socks5_handshake`
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<(String, u16), String> {
    let hello = handshake::Request::read_from(stream)
        .await
        .map_err(|e| format!("not a SOCKS5 client: {e}"))?;
    if !hello.methods.contains(&handshake::Method::NONE) {
        let _ = handshake::Response::new(handshake::Method::UNACCEPTABLE)
            .write_to(stream)
            .await;
        return Err("the SOCKS5 client offers only authentication methods; this listener needs none (it is local)".into());
    }
    handshake::Response::new(handshake::Method::NONE)
        .write_to(stream)
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::read_from(stream)
        .await
        .map_err(|e| format!("bad SOCKS5 request: {e}"))?;
    if req.command != Command::Connect {
        let _ = Response::new(Reply::CommandNotSupported, Address::unspecified())
            .write_to(stream)
            .await;
        return Err(format!(
            "SOCKS5 {:?} is not supported: only CONNECT (TCP)",
            req.command
        ));
    }
    let (host, port) = match req.address {
        Address::SocketAddress(a) => (a.ip().to_string(), a.port()),
        Address::DomainAddress(name, port) => {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c));
            if !ok {
                let _ = Response::new(Reply::AddressTypeNotSupported, Address::unspecified())
                    .write_to(stream)
                    .await;
                return Err("the SOCKS5 client named a host that is not a DNS name".into());
            }
            (String::from_utf8_lossy(&name).into_owned(), port)
        }
    };
    if port == 0 {
        let _ = Response::new(Reply::GeneralFailure, Address::unspecified())
            .write_to(stream)
            .await;
        return Err("the SOCKS5 client asked for port 0".into());
    }
    Ok((host, port))
}

/// Tell the client how its CONNECT went: `None` succeeded, else the
/// sender's refusal status.
pub async fn reply(stream: &mut TcpStream, refused: Option<Status>) -> std::io::Result<()> {
    let r = match refused {
        None => Reply::Succeeded,
        Some(Status::Unauthorized) => Reply::ConnectionNotAllowed,
        Some(Status::ConnectFailed) => Reply::HostUnreachable,
        Some(_) => Reply::GeneralFailure,
    };
    Response::new(r, Address::unspecified())
        .write_to(stream)
        .await
}
