//! Opening streams (with retries), reading headers off them without
//! over-reading into the payload.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    proto::header::{HeaderError, Reply, Request, MAX_BODY},
    transport::{ConnError, TunnelConnection},
};

/// Errors while reading a header.
#[derive(Debug, thiserror::Error)]
pub enum ReadHeaderError {
    /// Stream ended or failed.
    #[error("stream ended before its header: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes were not a valid header.
    #[error(transparent)]
    Header(#[from] HeaderError),
}

/// Read one request header (exactly its bytes).
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, ReadHeaderError> {
    let mut buf = vec![0u8; 6];
    r.read_exact(&mut buf).await?;
    // validates magic, version, kind and length before reading the body
    if let Some((req, _)) = Request::decode(&buf)? {
        return Ok(req);
    }
    let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    if len > MAX_BODY {
        return Err(HeaderError::TooLarge(len).into());
    }
    buf.resize(6 + len, 0);
    r.read_exact(&mut buf[6..]).await?;
    match Request::decode(&buf)? {
        Some((req, _)) => Ok(req),
        None => Err(HeaderError::Malformed.into()),
    }
}

/// Read one reply (exactly its bytes).
pub async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Result<Reply, ReadHeaderError> {
    let mut buf = vec![0u8; 4];
    r.read_exact(&mut buf).await?;
    if let Some((rep, _)) = Reply::decode(&buf)? {
        return Ok(rep);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    buf.resize(4 + len, 0);
    r.read_exact(&mut buf[4..]).await?;
    match Reply::decode(&buf)? {
        Some((rep, _)) => Ok(rep),
        None => Err(HeaderError::Malformed.into()),
    }
}

/// Backoff before each retry of `open_bi`: three retries, 100, 200, 400 ms.
pub const OPEN_RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// Open a bidirectional stream, retrying three times with backoff.
pub async fn open_bi_retry<C: TunnelConnection>(conn: &C) -> Result<(C::Send, C::Recv), ConnError> {
    let mut attempt = 0;
    loop {
        match conn.open_bi().await {
            Ok(s) => return Ok(s),
            Err(e) if attempt < OPEN_RETRY_BACKOFF.len() => {
                tracing::debug!(attempt, error = %e, "open stream failed, retrying");
                tokio::time::sleep(OPEN_RETRY_BACKOFF[attempt]).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{addr::Protocol, proto::header::Status};

    #[tokio::test]
    async fn reads_exactly_the_header() {
        let mut bytes = Request::hello(Some(&[3; 16]), Protocol::Tcp).encode();
        bytes.extend_from_slice(b"rest");
        let mut r = &bytes[..];
        let req = read_request(&mut r).await.unwrap();
        assert_eq!(req.token.as_deref(), Some(&[3u8; 16][..]));
        assert_eq!(r, b"rest");

        let mut bytes = Reply::err(Status::Busy, "full").encode();
        bytes.extend_from_slice(b"x");
        let mut r = &bytes[..];
        assert_eq!(read_reply(&mut r).await.unwrap().status, Status::Busy);
        assert_eq!(r, b"x");
    }

    #[tokio::test]
    async fn truncated_is_an_error() {
        let bytes = Request::hello(None, Protocol::Udp).encode();
        let mut r = &bytes[..bytes.len() - 1];
        assert!(read_request(&mut r).await.is_err());
        let mut r = &b"SSH-2.0-OpenSSH"[..];
        assert!(matches!(
            read_request(&mut r).await,
            Err(ReadHeaderError::Header(_))
        ));
    }
}
