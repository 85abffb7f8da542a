//! A direct TURN allocation, used to say why a configured TURN server gave
//! no relay candidate (webrtc-ice only logs it): unreachable, credentials
//! refused (401, after the realm/nonce round trip), or another error code.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use webrtc_util::Conn;

use super::TurnServer;

/// Allocate a relay on `t` from a fresh socket on `bind_ip`, then release
/// it. `Ok` is the relayed address; `Err` says what went wrong and names the server.
pub async fn probe(t: &TurnServer, bind_ip: IpAddr, limit: Duration) -> Result<SocketAddr, String> {
    let name = format!("turn:{}", t.host_port);
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))
        .await
        .map_err(|e| format!("{name}: cannot open a local UDP socket: {e}"))?;
    let cfg = turn::client::ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: t.host_port.clone(),
        username: t.user.clone(),
        password: t.password.clone(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(sock),
        vnet: None,
    };
    let client = turn::client::Client::new(cfg)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    if let Err(e) = client.listen().await {
        let _ = client.close().await;
        return Err(format!("{name}: {e}"));
    }
    let r = tokio::time::timeout(limit, client.allocate()).await;
    let out = match r {
        Ok(Ok(relay)) => {
            let addr = relay.local_addr().map_err(|e| format!("{name}: {e}"));
            let _ = relay.close().await;
            addr
        }
        Ok(Err(e)) => Err(format!("{name}: {}", explain(&e.to_string()))),
        Err(_) => Err(format!(
            "{name}: no answer within {} s (server down, wrong address, or UDP to it blocked)",
            limit.as_secs()
        )),
    };
    let _ = client.close().await;
    out
}

/// Turn the `turn` crate's error text into advice.
fn explain(e: &str) -> String {
    if e.contains("401") {
        "refused the credentials (401 Unauthorized): check --turn-user and --turn-password-file"
            .into()
    } else if e.contains("error 400") {
        "refused the request (400 Bad Request), which some servers answer to wrong credentials: check --turn-user and --turn-password-file".into()
    } else if e.contains("438") {
        "kept rejecting the nonce (438 Stale Nonce): check the server's clock and stale-nonce setting".into()
    } else if e.contains("486") {
        "refused: allocation quota reached for this user (486)".into()
    } else if e.contains("508") {
        "refused: the server has no relay ports left (508 Insufficient Capacity)".into()
    } else if e.contains("403") {
        "refused the allocation (403 Forbidden)".into()
    } else if e.contains("transaction") || e.contains("timeout") || e.contains("retransmi") {
        format!("no answer ({e}): server down, wrong address, or UDP to it blocked")
    } else {
        format!("allocation failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn error_codes_get_advice() {
        assert!(explain("error 401: Unauthorized").contains("--turn-user"));
        assert!(explain("(error 438: Stale Nonce)").contains("nonce"));
        assert!(explain("Allocate error response (error 400: )").contains("--turn-user"));
        assert!(explain("all retransmissions failed").contains("no answer"));
    }
}
