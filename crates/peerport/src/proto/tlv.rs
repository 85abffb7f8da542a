//! The framing every header shares: the protocol version, the size limit,
//! `tag u8 | length u16 | value` fields, and the errors of decoding them.

/// Current protocol version.
pub const VERSION: u8 = 1;
/// Largest header body accepted.
pub const MAX_BODY: usize = 4096;

/// Header decoding errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a peerport stream.
    #[error("peer did not speak the peerport protocol (bad magic)")]
    Magic,
    /// Newer peer.
    #[error("peer speaks peerport protocol version {0}, this build speaks {VERSION}: upgrade the older side")]
    Version(u8),
    /// Unknown stream kind.
    #[error("unknown stream kind {0}")]
    Kind(u8),
    /// Too large.
    #[error("header of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLarge(usize),
    /// Inconsistent TLV.
    #[error("malformed header field")]
    Malformed,
    /// Unknown status.
    #[error("unknown reply status {0}")]
    Status(u8),
}

/// Append one `tag u8 | length u16 BE | value` field.
pub(crate) fn put_tlv(body: &mut Vec<u8>, tag: u8, v: &[u8]) {
    body.push(tag);
    body.extend_from_slice(&(v.len() as u16).to_be_bytes());
    body.extend_from_slice(v);
}

/// The TLV fields of `body`; a field that runs past the end is an error.
pub(crate) fn tlvs(mut body: &[u8]) -> impl Iterator<Item = (u8, Result<&[u8], HeaderError>)> {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        if body.len() < 3 {
            body = &[];
            return Some((0, Err(HeaderError::Malformed)));
        }
        let tag = body[0];
        let l = u16::from_be_bytes([body[1], body[2]]) as usize;
        match body.get(3..3 + l) {
            Some(v) => {
                body = &body[3 + l..];
                Some((tag, Ok(v)))
            }
            None => {
                body = &[];
                Some((tag, Err(HeaderError::Malformed)))
            }
        }
    })
}
