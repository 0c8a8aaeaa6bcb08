//! Registry authentication as Ollama does it: the user's ed25519 key
//! (`id_ed25519` in OpenSSH format, in `~/.ollama` by default), the token
//! and the token exchange a registry asks for with `WWW-Authenticate:
//! Bearer realm=…`; `session.rs` sends a pull's or push's requests with the
//! token this fetches.
//!
//! The token request is Ollama's: `GET <realm>?nonce=…&scope=…&service=…&ts=…`
//! (query keys sorted, as Go encodes them) with the header
//! `Authorization: <public key>:<signature>`, where the public key is the
//! base64 middle field of the `ssh-ed25519 AAAA…` line and the signature is
//! the raw ed25519 signature, in standard base64, over
//! `GET,<token URL>,<base64(hex(sha256 of the empty body))>`. The answer is
//! `{"token": "…"}`, then sent as `Authorization: Bearer <token>`.
//!
//! This module knows the key files and the registry's auth protocol; which
//! requests a pull or push makes is `crate::registry::pull`'s and `crate::registry::push`'s, and
//! where the key lives is `Config::key_dir`'s. Keys protected by a
//! passphrase are not supported (Ollama never writes one).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest as _, Sha256};

use super::session::read_error_body;

/// The private key's file name; the public key is the same with `.pub`.
pub const KEY_FILE: &str = "id_ed25519";
/// The most of a registry's error body kept in a message.
/// The largest token response accepted.
const MAX_TOKEN_BODY: u64 = 1 << 20;
const PEM_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const PEM_END: &str = "-----END OPENSSH PRIVATE KEY-----";
const OPENSSH_MAGIC: &[u8] = b"openssh-key-v1\0";
const KEY_TYPE: &str = "ssh-ed25519";

/// What can go wrong while authenticating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file cannot be read or written.
    #[error("{path}: {source}")]
    KeyIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file is not an unencrypted OpenSSH ed25519 key.
    #[error("{path}: {reason}")]
    KeyFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's random source failed.
    #[error("no random bytes for a key or nonce")]
    Random,
    /// The registry's challenge names no usable realm.
    #[error("unusable registry challenge {0:?}")]
    Challenge(String),
    /// The realm is on another host than the registry (Ollama's check, so a
    /// signed request never goes to a third party).
    #[error("realm host {realm:?} does not match original host {host:?}")]
    RealmHost {
        /// The realm's host.
        realm: String,
        /// The registry's host.
        host: String,
    },
    /// The token endpoint refused or failed (`<status>: <body>`, as Ollama words it).
    #[error("{0}")]
    Token(String),
    /// The registry still refuses the request with a fresh token.
    #[error("unauthorized: access denied")]
    Unauthorized,
    /// Another hearth box that wants an API key (a bare `Bearer`
    /// challenge, no token realm).
    #[error("unauthorized: the registry at {0} wants an API key; name it in HEARTH_REGISTRY_KEYS (host:port=key)")]
    KeyRequired(String),
}

impl Error {
    /// Whether the registry refused us (as opposed to a local or protocol
    /// failure); the API answers these with 401.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Token(_) | Error::Unauthorized | Error::KeyRequired(_)
        )
    }
}

/// The user's ed25519 key pair.
pub struct Key {
    pair: Ed25519KeyPair,
    /// The 32-byte private seed, which ring does not give back but the
    /// OpenSSH file needs.
    seed: [u8; 32],
    /// The public key in SSH wire format (`string "ssh-ed25519"`, `string key`).
    public_blob: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("public", &self.public_line())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Creates the key pair in `dir` unless its private key exists, as
    /// `ollama serve` does at start-up. Returns the new public key line
    /// when one was created.
    pub fn ensure(dir: &Path) -> Result<Option<String>, Error> {
        let path = dir.join(KEY_FILE);
        if path.exists() {
            return Ok(None);
        }
        let key = Key::generate()?;
        key.write(dir)?;
        Ok(Some(key.public_line()))
    }

    /// Loads the private key from `dir`.
    pub fn load(dir: &Path) -> Result<Key, Error> {
        let path = dir.join(KEY_FILE);
        let text = fs::read_to_string(&path).map_err(|source| Error::KeyIo {
            path: path.clone(),
            source,
        })?;
        parse_openssh(&text).map_err(|reason| Error::KeyFormat { path, reason })
    }

    /// A fresh random key pair.
    pub fn generate() -> Result<Key, Error> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| Error::Random)?;
        Key::from_seed(&seed).map_err(|_| Error::Random)
    }

    fn from_seed(seed: &[u8]) -> Result<Key, String> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| "an ed25519 seed is 32 bytes".to_string())?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| "invalid ed25519 private key".to_string())?;
        let mut public_blob = Vec::new();
        put_string(&mut public_blob, KEY_TYPE.as_bytes());
        put_string(&mut public_blob, pair.public_key().as_ref());
        Ok(Key {
            pair,
            seed,
            public_blob,
        })
    }

    /// The public key as an `authorized_keys` line, `ssh-ed25519 AAAA…`.
    pub fn public_line(&self) -> String {
        format!("{KEY_TYPE} {}", STANDARD.encode(&self.public_blob))
    }

    /// Ollama's signed-request header value: `<public key>:<signature>`.
    pub fn authorization(&self, data: &[u8]) -> String {
        format!(
            "{}:{}",
            STANDARD.encode(&self.public_blob),
            STANDARD.encode(self.pair.sign(data).as_ref())
        )
    }

    /// Writes the private key (mode 0600) and the public key line into
    /// `dir`, creating it. The private key is written to a temporary name
    /// first, so a crash never leaves half a key where a pull would read it.
    fn write(&self, dir: &Path) -> Result<(), Error> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::KeyIo { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(KEY_FILE);
        let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
        let mut options = fs::File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        let written = file
            .write_all(self.openssh_pem()?.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io(&path)(e));
        }
        let public = dir.join(format!("{KEY_FILE}.pub"));
        fs::write(&public, format!("{}\n", self.public_line())).map_err(io(&public))?;
        Ok(())
    }

    /// The private key in OpenSSH's format, unencrypted, no comment.
    fn openssh_pem(&self) -> Result<String, Error> {
        let mut check = [0u8; 4];
        SystemRandom::new()
            .fill(&mut check)
            .map_err(|_| Error::Random)?;
        let public = self.pair.public_key().as_ref();
        let mut private = Vec::new();
        private.extend_from_slice(&check);
        private.extend_from_slice(&check);
        put_string(&mut private, KEY_TYPE.as_bytes());
        put_string(&mut private, public);
        // OpenSSH stores the 32-byte seed followed by the public key.
        let mut secret = self.seed.to_vec();
        secret.extend_from_slice(public);
        put_string(&mut private, &secret);
        put_string(&mut private, b"");
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }
        let mut body = OPENSSH_MAGIC.to_vec();
        put_string(&mut body, b"none");
        put_string(&mut body, b"none");
        put_string(&mut body, b"");
        body.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut body, &self.public_blob);
        put_string(&mut body, &private);
        let b64 = STANDARD.encode(&body);
        let mut pem = format!("{PEM_BEGIN}\n");
        for line in b64.as_bytes().chunks(70) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Ok(pem)
    }
}

/// `string` in SSH wire format: a big-endian u32 length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A reader over SSH wire format.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> Result<u32, String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or("the key file is truncated")?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err("the key file is truncated".into());
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(s)
    }
}

/// Parses an unencrypted OpenSSH private key holding one ed25519 key.
fn parse_openssh(text: &str) -> Result<Key, String> {
    let start = text
        .find(PEM_BEGIN)
        .ok_or("not an OpenSSH private key (no BEGIN line)")?;
    let rest = &text[start + PEM_BEGIN.len()..];
    let end = rest.find(PEM_END).ok_or("no END line")?;
    let b64: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let body = STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64: {e}"))?;
    let mut w = Wire(
        body.strip_prefix(OPENSSH_MAGIC)
            .ok_or("not an openssh-key-v1 key")?,
    );
    let cipher = w.string()?;
    let kdf = w.string()?;
    let _kdf_options = w.string()?;
    if cipher != b"none" || kdf != b"none" {
        return Err("the key is protected by a passphrase, which is not supported".into());
    }
    if w.u32()? != 1 {
        return Err("the file must hold exactly one key".into());
    }
    let _public = w.string()?;
    let mut private = Wire(w.string()?);
    if private.u32()? != private.u32()? {
        return Err("the key's check numbers differ (corrupt or encrypted)".into());
    }
    let kind = private.string()?;
    if kind != KEY_TYPE.as_bytes() {
        return Err(format!(
            "a {} key, not {KEY_TYPE}",
            String::from_utf8_lossy(kind)
        ));
    }
    let public = private.string()?;
    let secret = private.string()?;
    if public.len() != 32 || secret.len() != 64 || secret[32..] != *public {
        return Err("malformed ed25519 key".into());
    }
    let key = Key::from_seed(&secret[..32])?;
    if key.pair.public_key().as_ref() != public {
        return Err("the private key does not match its public key".into());
    }
    Ok(key)
}

/// A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The token endpoint.
    pub realm: String,
    /// The registry's name for itself.
    pub service: String,
    /// What the token must allow, space-separated scopes.
    pub scope: String,
}

impl Challenge {
    /// Parses a Bearer challenge. Values are quoted and may contain commas
    /// (scopes such as `repository:a/b:pull,push`).
    pub fn parse(header: &str) -> Result<Challenge, Error> {
        let bad = || Error::Challenge(header.to_string());
        let rest = header.trim();
        let rest = rest
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map(|_| &rest[7..])
            .ok_or_else(bad)?;
        let mut params: HashMap<String, String> = HashMap::new();
        let mut rest = rest.trim_start();
        while !rest.is_empty() {
            let eq = rest.find('=').ok_or_else(bad)?;
            let key = rest[..eq].trim().to_ascii_lowercase();
            let after = &rest[eq + 1..];
            let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
                let close = quoted.find('"').ok_or_else(bad)?;
                (&quoted[..close], &quoted[close + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            };
            params.insert(key, value.to_string());
            rest = tail.trim_start().trim_start_matches(',').trim_start();
        }
        let realm = params.remove("realm").filter(|r| !r.is_empty());
        Ok(Challenge {
            realm: realm.ok_or_else(bad)?,
            service: params.remove("service").unwrap_or_default(),
            scope: params.remove("scope").unwrap_or_default(),
        })
    }

    /// The token URL: the realm with `nonce`, `scope` (one per scope),
    /// `service` and `ts` added and every query key sorted, as Go's
    /// `url.Values.Encode` writes it (the registry checks the signature
    /// over exactly this string).
    fn token_url(&self, ts: u64, nonce: &str) -> String {
        let (base, query) = match self.realm.split_once('?') {
            Some((b, q)) => (b, q),
            None => (self.realm.as_str(), ""),
        };
        let mut pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (query_unescape(k), query_unescape(v))
            })
            .collect();
        pairs.push(("service".into(), self.service.clone()));
        // Go splits on single spaces, so an empty scope is one empty value.
        for s in self.scope.split(' ') {
            pairs.push(("scope".into(), s.to_string()));
        }
        pairs.push(("ts".into(), ts.to_string()));
        pairs.push(("nonce".into(), nonce.to_string()));
        // A stable sort keeps the order of values within one key, as Go does.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect();
        format!("{base}?{}", query.join("&"))
    }
}

/// The `host[:port]` of an `http(s)://` URL.
pub(super) fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, space as `+`,
/// everything else `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inverse of [`query_escape`]; malformed escapes are kept as they are.
fn query_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Asks the challenge's realm for a token, signing the request with the
/// key in `key_dir` (created first if missing, as `ollama serve` would
/// have). `host` is the registry's, which the realm must share.
pub fn fetch_token(
    agent: &ureq::Agent,
    key_dir: &Path,
    challenge: &Challenge,
    host: &str,
) -> Result<String, Error> {
    let realm_host =
        url_host(&challenge.realm).ok_or_else(|| Error::Challenge(challenge.realm.clone()))?;
    if realm_host != host {
        return Err(Error::RealmHost {
            realm: realm_host.to_string(),
            host: host.to_string(),
        });
    }
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::Random)?;
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let url = challenge.token_url(ts, &URL_SAFE_NO_PAD.encode(nonce));
    if let Some(line) = Key::ensure(key_dir)? {
        log::info!("generated a new key pair; your public key is: {line}");
    }
    let key = Key::load(key_dir)?;
    let empty_body = hex(&Sha256::digest(b""));
    let data = format!("GET,{url},{}", STANDARD.encode(empty_body));
    let resp = match agent
        .get(&url)
        .set("Authorization", &key.authorization(data.as_bytes()))
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body = read_error_body(r);
            return Err(Error::Token(if body.is_empty() {
                code.to_string()
            } else {
                format!("{code}: {body}")
            }));
        }
        Err(e) => return Err(Error::Token(e.to_string())),
    };
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_TOKEN_BODY)
        .read_to_end(&mut body)
        .map_err(|e| Error::Token(e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: String,
    }
    let token: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| Error::Token(format!("token response: {e}")))?;
    if token.token.is_empty() {
        return Err(Error::Unauthorized);
    }
    Ok(token.token)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    /// A throwaway key made by `ssh-keygen -t ed25519 -N '' -C ''` for this
    /// test only, and its `.pub` line.
    const SSH_KEYGEN_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACC7MnfInufRwuSPy52jPetXecIyk2pqT7xsJiu1BucyFQAAAIiZboX6mW6F
+gAAAAtzc2gtZWQyNTUxOQAAACC7MnfInufRwuSPy52jPetXecIyk2pqT7xsJiu1BucyFQ
AAAEBtne1Shfo151NY1G1Pq++rTcJvaSSBxgD6NfndIOvBibsyd8ie59HC5I/LnaM961d5
wjKTampPvGwmK7UG5zIVAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";
    const SSH_KEYGEN_PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILsyd8ie59HC5I/LnaM961d5wjKTampPvGwmK7UG5zIV";

    fn verify(key: &Key, data: &[u8], authorization: &str) -> bool {
        let (public, sig) = authorization.split_once(':').expect("pub:sig");
        assert_eq!(public, STANDARD.encode(&key.public_blob));
        let sig = STANDARD.decode(sig).expect("base64 signature");
        assert_eq!(sig.len(), 64);
        UnparsedPublicKey::new(&ED25519, key.pair.public_key().as_ref())
            .verify(data, &sig)
            .is_ok()
    }

    #[test]
    fn reads_a_key_written_by_ssh_keygen() {
        let key = parse_openssh(SSH_KEYGEN_KEY).expect("parse");
        assert_eq!(key.public_line(), SSH_KEYGEN_PUB);
        let auth = key.authorization(b"GET,x,y");
        assert!(verify(&key, b"GET,x,y", &auth));
        assert!(!verify(&key, b"GET,x,z", &auth));
    }

    #[test]
    fn generated_keys_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = Key::ensure(dir.path()).expect("create").expect("new key");
        assert!(
            line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            "{line}"
        );
        assert_eq!(Key::ensure(dir.path()).expect("again"), None);
        let key = Key::load(dir.path()).expect("load");
        assert_eq!(key.public_line(), line);
        let public = fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("pub");
        assert_eq!(public, format!("{line}\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let bad = dir.path().join("bad");
        fs::create_dir(&bad).expect("mkdir");
        fs::write(bad.join(KEY_FILE), "not a key").expect("write");
        assert!(matches!(Key::load(&bad), Err(Error::KeyFormat { .. })));
    }

    #[test]
    fn challenges_parse_with_commas_in_scopes() {
        let c = Challenge::parse(
            r#"Bearer realm="https://r.example/v2/token",service="r.example",scope="repository:library/a:pull,push""#,
        )
        .expect("parse");
        assert_eq!(c.realm, "https://r.example/v2/token");
        assert_eq!(c.service, "r.example");
        assert_eq!(c.scope, "repository:library/a:pull,push");
        assert!(Challenge::parse("Basic realm=\"x\"").is_err());
        assert!(Challenge::parse("Bearer service=\"x\"").is_err());
    }

    #[test]
    fn token_urls_sort_and_escape_as_go_does() {
        let c = Challenge {
            realm: "https://r.example/v2/token?a=1".into(),
            service: "r.example".into(),
            scope: "repository:library/a:pull repository:x/y:push".into(),
        };
        assert_eq!(
            c.token_url(1700000000, "n_-1"),
            "https://r.example/v2/token?a=1&nonce=n_-1\
             &scope=repository%3Alibrary%2Fa%3Apull&scope=repository%3Ax%2Fy%3Apush\
             &service=r.example&ts=1700000000"
        );
        assert_eq!(query_unescape("a%3Ab+c%zz%4"), "a:b c%zz%4");
        assert_eq!(url_host("http://h:1/v2/token?x"), Some("h:1"));
    }
}
