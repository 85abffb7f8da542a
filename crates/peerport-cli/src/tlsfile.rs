//! Reading trusted certificates from PEM files (`--relay-ca`).

use std::path::Path;

use rustls::pki_types::{pem::PemObject, CertificateDer};

/// Every certificate in the PEM file at `path`; an error that says what to
/// fix if the file is unreadable or holds none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path)
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?;
    parse_certs(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every `CERTIFICATE` block of a PEM text.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err(
            "no `-----BEGIN CERTIFICATE-----` block found; give the relay's CA certificate in PEM form"
                .into(),
        );
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pem_and_rejects_garbage() {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let two = format!("{}\n{}", ck.cert.pem(), ck.cert.pem());
        assert_eq!(parse_certs(two.as_bytes()).unwrap().len(), 2);
        assert_eq!(parse_certs(two.as_bytes()).unwrap()[0], *ck.cert.der());
        assert!(parse_certs(b"hello")
            .unwrap_err()
            .contains("BEGIN CERTIFICATE"));
        assert!(parse_certs(b"").is_err());
        let bad = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(parse_certs(bad.as_bytes()).is_err());
    }
}
