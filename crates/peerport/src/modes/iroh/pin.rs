//! Trust for self-hosted relays named by a ticket: a relay whose
//! certificate chain holds a certificate with a pinned SHA-256 is verified
//! with that certificate as its root (a self-signed relay certificate is
//! its own root); any other server is verified as before (the web PKI
//! roots plus `--relay-ca`).

use std::{io, sync::Arc};

use iroh_relay::tls::CaTlsConfig;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER: what a ticket pins.
pub fn pin_of(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// The relays' TLS trust: `roots` (web PKI plus these extra roots), and
/// with `pins`, certificates whose SHA-256 is pinned.
pub fn ca_tls_config(roots: Vec<CertificateDer<'static>>, pins: Vec<[u8; 32]>) -> CaTlsConfig {
    let base = CaTlsConfig::default().with_extra_roots(roots);
    if pins.is_empty() {
        return base;
    }
    CaTlsConfig::custom_server_cert_verifier(Arc::new(move |provider: Arc<CryptoProvider>| {
        let verifier: Arc<dyn ServerCertVerifier> = Arc::new(PinVerifier {
            base: base.server_cert_verifier(provider.clone())?,
            pins: pins.clone(),
            provider,
        });
        Ok(verifier)
    }))
}

#[derive(Debug)]
struct PinVerifier {
    base: Arc<dyn ServerCertVerifier>,
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// A verifier with the pinned certificate of this chain as its only
    /// root, if the chain has one.
    fn pinned(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<io::Result<Arc<WebPkiServerVerifier>>> {
        let anchor = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| self.pins.contains(&pin_of(c)))?;
        let mut roots = RootCertStore::empty();
        Some(
            roots
                .add(anchor.clone().into_owned())
                .map_err(io::Error::other)
                .and_then(|()| {
                    WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        self.provider.clone(),
                    )
                    .build()
                    .map_err(io::Error::other)
                }),
        )
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pinned(end_entity, intermediates) {
            Some(Ok(v)) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Some(Err(e)) => Err(rustls::Error::General(format!(
                "the pinned relay certificate is unusable: {e}"
            ))),
            None => self.base.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn self_signed(name: &str) -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec![name.to_string()])
            .unwrap()
            .cert
            .der()
            .clone()
    }

    fn verify(cfg: &CaTlsConfig, cert: &CertificateDer<'_>, name: &str) -> bool {
        let v = cfg.server_cert_verifier(provider()).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    /// The pinned self-signed certificate is trusted for its own name only;
    /// another self-signed certificate is not.
    #[test]
    fn trusts_exactly_the_pinned_certificate() {
        let relay = self_signed("192.0.2.7");
        let other = self_signed("192.0.2.7");
        let cfg = ca_tls_config(vec![], vec![pin_of(&relay)]);
        assert!(verify(&cfg, &relay, "192.0.2.7"));
        assert!(!verify(&cfg, &relay, "192.0.2.8"));
        assert!(!verify(&cfg, &other, "192.0.2.7"));
        // without the pin, nothing self-signed passes; with it as a root, it does
        assert!(!verify(&ca_tls_config(vec![], vec![]), &relay, "192.0.2.7"));
        assert!(verify(
            &ca_tls_config(vec![relay.clone()], vec![]),
            &relay,
            "192.0.2.7"
        ));
    }
}
