//! HTTP for people and scrapers: `--metrics ADDR` serves `/metrics`
//! (see [`super::metrics`]); `--dashboard ADDR` serves a small page
//! (embedded in the binary) with the sessions, their path, RTT and
//! throughput over the last minutes, and recent events, updated once a
//! second by server-sent events.
//!
//! The dashboard listens on loopback unless told otherwise; on any other
//! address it requires a token (`--dashboard-token-file`), given as
//! `?token=` in the page's address or as `Authorization: Bearer`. Both
//! ports admit a bounded number of connections with deadlines
//! ([`super::guard`]), so no client can take the tunnel's descriptors.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        Html, IntoResponse, Response,
    },
    routing::get,
    Json, Router,
};
use futures::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use peerport::status::Monitor;

use super::{guard::Guarded, metrics};

const PAGE: &str = include_str!("dashboard.html");

/// Why an HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} for {flag}: {source} (pick another address or port)")]
    Bind {
        /// The flag that asked for it.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A dashboard reachable from other hosts must ask for a token.
    #[error("--dashboard {0} is not a loopback address, so anyone who can reach it could watch the tunnel: pass --dashboard-token-file FILE (a secret the page asks for), or use 127.0.0.1")]
    NeedsToken(SocketAddr),
}

/// The dashboard's rule: an address other than loopback needs a token.
pub fn token_rule(addr: SocketAddr, token: Option<&str>) -> Result<(), WebError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(WebError::NeedsToken(addr));
    }
    Ok(())
}

/// Bind `addr` for `flag`, with an error that says what to do.
pub async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, WebError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { flag, addr, source })
}

/// Serve `/metrics` until `cancel` fires.
pub async fn serve_metrics(listener: TcpListener, monitor: Monitor, cancel: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route(
            "/",
            get(|| async { Html("<a href=\"/metrics\">/metrics</a>\n") }),
        )
        .with_state(monitor);
    let _ = axum::serve(Guarded::new(listener), app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
}

async fn scrape(State(m): State<Monitor>, h: HeaderMap) -> Response {
    let accept = h.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = metrics::Format::from_accept(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        metrics::encode(&m, format),
    )
        .into_response()
}

#[derive(Clone)]
struct Dash {
    monitor: Monitor,
    token: Option<String>,
    cancel: CancellationToken,
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl Dash {
    fn allowed(&self, q: &TokenQuery, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        token_matches(q.token.as_deref().or(bearer).unwrap_or(""), want)
    }
}

/// Whether `given` is the token. Both are hashed and the digests compared
/// in constant time, so neither the time taken nor an early exit on a
/// length difference tells anything about the token or its length.
fn token_matches(given: &str, want: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(want.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "this dashboard needs its token: open it as http://HOST:PORT/?token=TOKEN (the contents of --dashboard-token-file)\n",
    )
        .into_response()
}

/// Serve the dashboard until `cancel` fires. `token`: required from every
/// client when set; must be set when `listener` is not on loopback.
pub async fn serve_dashboard(
    listener: TcpListener,
    monitor: Monitor,
    token: Option<String>,
    cancel: CancellationToken,
) -> Result<(), WebError> {
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        flag: "--dashboard",
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    token_rule(addr, token.as_deref())?;
    let state = Dash {
        monitor,
        token,
        cancel: cancel.clone(),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .with_state(state);
    let _ = axum::serve(Guarded::new(listener), app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
    Ok(())
}

async fn page(State(d): State<Dash>, Query(q): Query<TokenQuery>, h: HeaderMap) -> Response {
    if !d.allowed(&q, &h) {
        return refused();
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(page_with(&d.monitor)),
    )
        .into_response()
}

/// The page with the state at this moment inside it (as JSON that cannot
/// end its script element).
fn page_with(m: &Monitor) -> String {
    let initial = serde_json::json!({ "status": m.snapshot(), "history": m.history() });
    let json = initial
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    PAGE.replace("/*INITIAL*/", &json)
}

async fn status(State(d): State<Dash>, Query(q): Query<TokenQuery>, h: HeaderMap) -> Response {
    if !d.allowed(&q, &h) {
        return refused();
    }
    Json(d.monitor.snapshot()).into_response()
}

async fn history(State(d): State<Dash>, Query(q): Query<TokenQuery>, h: HeaderMap) -> Response {
    if !d.allowed(&q, &h) {
        return refused();
    }
    Json(d.monitor.history()).into_response()
}

async fn events(State(d): State<Dash>, Query(q): Query<TokenQuery>, h: HeaderMap) -> Response {
    if !d.allowed(&q, &h) {
        return refused();
    }
    Sse::new(ticks(d.monitor, d.cancel))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A snapshot a second until the server stops.
fn ticks(
    monitor: Monitor,
    cancel: CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(
        (monitor, cancel, true),
        |(monitor, cancel, first)| async move {
            if !first {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            let json = serde_json::to_string(&monitor.snapshot()).unwrap_or_default();
            let ev = SseEvent::default().event("status").data(json);
            Some((Ok(ev), (monitor, cancel, false)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_itself_matches() {
        let want = "0123456789abcdef0123";
        assert!(token_matches(want, want));
        for other in [
            "",
            "0123456789abcdef012",
            "0123456789abcdef01234",
            "1123456789abcdef0123",
        ] {
            assert!(!token_matches(other, want), "{other}");
        }
    }
}
