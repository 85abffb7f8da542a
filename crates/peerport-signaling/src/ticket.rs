//! The `iroh` mode ticket: what a receiver needs to reach a sender and be let in.
//!
//! Text form: `ppt1` followed by lowercase unpadded base32 of
//! `version (1) || endpoint id (32) || token (16) || checksum (4)`, where the
//! checksum is the first four bytes of SHA-256 over everything before it.
//! That is 89 characters, safe to paste into chat, shell and e-mail.
//!
//! The endpoint id is an ed25519 public key (iroh authenticates it in the TLS
//! handshake). The token is a shared secret that the sender demands before it
//! forwards anything, so knowing the sender's id alone is not enough.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

/// Length of the access token in bytes.
pub const TOKEN_LEN: usize = 16;
const PREFIX: &str = "ppt1";
const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 32 + TOKEN_LEN;
const TOTAL_LEN: usize = BODY_LEN + 4;

/// A decoded ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The sender's endpoint id (ed25519 public key bytes).
    pub endpoint_id: [u8; 32],
    /// The access token the sender expects.
    pub token: [u8; TOKEN_LEN],
}

/// Why a ticket could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a peerport ticket at all.
    #[error("not a peerport ticket (it should start with `{PREFIX}`): copy the whole line the sender printed")]
    Prefix,
    /// Not valid base32.
    #[error("the ticket contains characters that do not belong to it: copy it again exactly")]
    Encoding,
    /// Wrong length.
    #[error("the ticket is {0} bytes long instead of {TOTAL_LEN}: it was cut off or has extra characters; copy it again")]
    Length(usize),
    /// A ticket from a newer peerport.
    #[error("ticket version {0} is not supported by this peerport (it knows version {VERSION}); upgrade peerport")]
    Version(u8),
    /// Checksum mismatch.
    #[error("the ticket's checksum does not match: it was mistyped or altered; copy it again")]
    Checksum,
}

impl Ticket {
    /// Encode to the pasteable text form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(TOTAL_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.endpoint_id);
        bytes.extend_from_slice(&self.token);
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..4]);
        format!(
            "{PREFIX}{}",
            BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
        )
    }

    /// Decode the text form. Surrounding whitespace is ignored and the case
    /// of the base32 part does not matter.
    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        let rest = text
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &text[PREFIX.len()..])
            .ok_or(TicketError::Prefix)?;
        let bytes = BASE32_NOPAD
            .decode(rest.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Encoding)?;
        if bytes.is_empty() {
            return Err(TicketError::Length(0));
        }
        if bytes[0] != VERSION {
            return Err(TicketError::Version(bytes[0]));
        }
        if bytes.len() != TOTAL_LEN {
            return Err(TicketError::Length(bytes.len()));
        }
        let sum = Sha256::digest(&bytes[..BODY_LEN]);
        if sum[..4] != bytes[BODY_LEN..] {
            return Err(TicketError::Checksum);
        }
        let mut endpoint_id = [0u8; 32];
        endpoint_id.copy_from_slice(&bytes[1..33]);
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&bytes[33..BODY_LEN]);
        Ok(Ticket { endpoint_id, token })
    }

    /// Whether `text` looks like a ticket (as opposed to a bare endpoint id).
    pub fn looks_like_ticket(text: &str) -> bool {
        text.trim()
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            endpoint_id: [7; 32],
            token: [9; TOKEN_LEN],
        }
    }

    #[test]
    fn roundtrip() {
        let t = sample();
        let s = t.encode();
        assert!(s.starts_with("ppt1"));
        assert_eq!(s.len(), 89);
        assert_eq!(Ticket::decode(&s).unwrap(), t);
        assert_eq!(
            Ticket::decode(&format!("  {}\r\n", s.to_uppercase())).unwrap(),
            t
        );
    }

    #[test]
    fn rejects_damage() {
        let s = sample().encode();
        assert_eq!(Ticket::decode("hello"), Err(TicketError::Prefix));
        assert_eq!(Ticket::decode(""), Err(TicketError::Prefix));
        assert_eq!(Ticket::decode("ppt1!!!"), Err(TicketError::Encoding));
        assert!(matches!(
            Ticket::decode(&s[..s.len() - 8]),
            Err(TicketError::Length(_)) | Err(TicketError::Encoding)
        ));
        // flip one character in the middle
        let mut chars: Vec<char> = s.chars().collect();
        chars[40] = if chars[40] == 'a' { 'b' } else { 'a' };
        let flipped: String = chars.into_iter().collect();
        assert_eq!(Ticket::decode(&flipped), Err(TicketError::Checksum));
    }

    #[test]
    fn never_panics_on_prefix_garbage() {
        for s in [
            "ppt1",
            "PPT1a",
            "ppt1\u{1F600}",
            "pp",
            "ppt",
            "ppt1aaaaaaaa",
        ] {
            let _ = Ticket::decode(s);
        }
    }
}
