//! Content digests: `sha256:<hex>` on the wire and in manifests, `sha256-<hex>` on disk.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A validated sha256 digest, kept as 64 lowercase hex characters. In JSON
/// (manifests) it is the string `sha256:<hex>`; a string of another shape
/// does not deserialize.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl TryFrom<String> for Digest {
    type Error = InvalidDigest;

    fn try_from(s: String) -> Result<Digest, InvalidDigest> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// The digest string did not have the `sha256:<64 hex>` shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest format")]
pub struct InvalidDigest;

impl Digest {
    /// Accepts `sha256:<hex>` and `sha256-<hex>`, as Ollama's blob routes do.
    pub fn parse(s: &str) -> Result<Digest, InvalidDigest> {
        let hex = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .ok_or(InvalidDigest)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidDigest);
        }
        Ok(Digest(hex.to_ascii_lowercase()))
    }

    /// [`Digest::parse`] for names a client sends to the blob routes, which
    /// take lower-case hex only (an upper-case digest is a 400 in Ollama,
    /// as the hostile-input issue measured).
    pub fn parse_lowercase(s: &str) -> Result<Digest, InvalidDigest> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(InvalidDigest);
        }
        Digest::parse(s)
    }

    /// The digest of a finished hash.
    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(hex(&h.finalize()))
    }

    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex(&Sha256::digest(bytes)))
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The blob file name, `sha256-<hex>`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators() {
        let h = "a".repeat(64);
        assert_eq!(
            Digest::parse(&format!("sha256:{h}")).map(|d| d.to_string()),
            Ok(format!("sha256:{h}"))
        );
        assert_eq!(
            Digest::parse(&format!("sha256-{h}")).map(|d| d.file_name()),
            Ok(format!("sha256-{h}"))
        );
        assert_eq!(
            Digest::parse(&format!("sha256:{}", "A".repeat(64))).map(|d| d.hex().to_string()),
            Ok(h.clone())
        );
        // The blob routes take lower-case hex only.
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(Digest::parse_lowercase(&upper), Err(InvalidDigest));
        assert!(Digest::parse_lowercase(&format!("sha256:{h}")).is_ok());
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert_eq!(Digest::parse(bad), Err(InvalidDigest), "{bad:?}");
            assert_eq!(Digest::parse_lowercase(bad), Err(InvalidDigest), "{bad:?}");
        }
    }

    #[test]
    fn hashes() {
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
