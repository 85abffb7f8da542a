//! The TLS 1.3 provider both QUIC stacks use.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};

/// ring's provider with AES-128-GCM offered first.
///
/// Both sides offer the same list, so a peerport pair settles on
/// AES-128-GCM: four fewer AES rounds per block than AES-256-GCM (ring's
/// own first choice), at a strength well beyond what a session key
/// needs. A peer offering AES-256-GCM first still gets it.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = ring::default_provider();
    p.cipher_suites.sort_by_key(|s| rank(s.suite()));
    Arc::new(p)
}

/// Order of preference: lower first.
fn rank(s: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite::*;
    match s {
        TLS13_AES_128_GCM_SHA256 => 0,
        TLS13_AES_256_GCM_SHA384 => 1,
        TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_and_nothing_is_dropped() {
        let p = provider();
        let names: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(names[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(names.len(), ring::default_provider().cipher_suites.len());
    }
}
