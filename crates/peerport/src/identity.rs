//! Persistent identities: secret key files, created 0600 and refused when
//! others can read them (like OpenSSH does with private keys).

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use iroh::SecretKey;
use sha2::{Digest, Sha256};

/// Errors about secret files.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Group/world readable.
    #[error("secret file {path} is accessible by group or others (mode {mode:o}): run `chmod 600 {path}` and try again")]
    Permissions {
        /// Path.
        path: String,
        /// Mode bits.
        mode: u32,
    },
    /// Could not read/write.
    #[error("secret file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Unparseable contents.
    #[error("secret file {path} does not hold a peerport secret (64 hex characters): create one with `peerport generate-secret --output {path}`")]
    Format {
        /// Path.
        path: String,
    },
    /// Not there.
    #[error("secret file {path} does not exist: create one with `peerport generate-secret --output {path}`")]
    Missing {
        /// Path.
        path: String,
    },
    /// A directory where a file belongs.
    #[error("secret file {path} is a directory: give the path of a file instead, e.g. {path}/peerport.key")]
    Directory {
        /// Path.
        path: String,
    },
    /// Exists already.
    #[error("{path} already exists: pass --force to overwrite it (the old identity is lost)")]
    Exists {
        /// Path.
        path: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Load the secret in `path`, creating it (0600) if it does not exist.
pub fn load_or_create(path: &Path) -> Result<SecretKey, IdentityError> {
    if path.exists() {
        load(path)
    } else {
        let key = SecretKey::generate();
        write(path, &key, false)?;
        tracing::info!(path = %path.display(), "created a new secret key file");
        Ok(key)
    }
}

/// A directory given where a secret file belongs.
fn not_a_directory(path: &Path) -> Result<(), IdentityError> {
    if path.is_dir() {
        return Err(IdentityError::Directory {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// Read a private file (a key), refusing group/world-accessible ones.
pub fn read_private(path: &Path) -> Result<String, IdentityError> {
    not_a_directory(path)?;
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io_err(path))
}

/// Write a private text file (mode 0600), refusing to overwrite unless `force`.
pub fn write_private(path: &Path, text: &str, force: bool) -> Result<(), IdentityError> {
    not_a_directory(path)?;
    if path.exists() && !force {
        return Err(IdentityError::Exists {
            path: path.display().to_string(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(path))?;
    }
    let tmp = path.with_extension("tmp-peerport");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(path))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    writeln!(f, "{text}").map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Load an existing secret, refusing group/world-accessible files.
pub fn load(path: &Path) -> Result<SecretKey, IdentityError> {
    if !path.exists() {
        return Err(IdentityError::Missing {
            path: path.display().to_string(),
        });
    }
    let text = read_private(path)?;
    let bytes = hex::decode(text.trim()).map_err(|_| IdentityError::Format {
        path: path.display().to_string(),
    })?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::Format {
        path: path.display().to_string(),
    })?;
    Ok(SecretKey::from_bytes(&arr))
}

/// Write `key` to `path` with mode 0600.
pub fn write(path: &Path, key: &SecretKey, force: bool) -> Result<(), IdentityError> {
    write_private(path, &hex::encode(key.to_bytes()), force)
}

/// The access token that belongs to an identity: stable for a persistent
/// secret, fresh for an ephemeral one. One-way, so the token does not reveal the key.
pub fn derive_token(key: &SecretKey) -> [u8; peerport_signaling::TOKEN_LEN] {
    let mut h = Sha256::new();
    h.update(b"peerport access token v1");
    h.update(key.to_bytes());
    let d = h.finalize();
    let mut t = [0u8; peerport_signaling::TOKEN_LEN];
    t.copy_from_slice(&d[..peerport_signaling::TOKEN_LEN]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key");
        let k = load_or_create(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k2 = load_or_create(&p).unwrap();
        assert_eq!(k.public(), k2.public());
        assert_eq!(derive_token(&k), derive_token(&k2));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&p), Err(IdentityError::Permissions { .. })));
        assert!(matches!(
            write(&p, &k, false),
            Err(IdentityError::Exists { .. })
        ));
        write(&p, &k, true).unwrap();
        fs::write(&p, "nonsense").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&p), Err(IdentityError::Format { .. })));
    }

    #[test]
    fn a_directory_is_not_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for mode in [0o755, 0o700] {
            fs::set_permissions(d, fs::Permissions::from_mode(mode)).unwrap();
            for e in [
                load(d).unwrap_err(),
                load_or_create(d).unwrap_err(),
                read_private(d).unwrap_err(),
                write(d, &SecretKey::generate(), true).unwrap_err(),
                write(d, &SecretKey::generate(), false).unwrap_err(),
            ] {
                let text = e.to_string();
                assert!(matches!(e, IdentityError::Directory { .. }), "{text}");
                assert!(
                    text.contains("is a directory") && text.contains("give the path of a file"),
                    "{text}"
                );
                assert!(!text.contains("chmod"), "{text}");
            }
        }
    }
}
