//! Who may do what: the API keys a box accepts, each an admin key (every
//! route) or an inference key (running and reading models), from
//! `HEARTH_API_KEYS`, `HEARTH_INFERENCE_KEYS` and `HEARTH_API_KEYS_FILE`.
//!
//! Keys are kept only as SHA-256 hashes and compared in constant time (the
//! hash of the presented token against every stored hash, without stopping
//! at a match), so neither the time a check takes nor a memory dump or a log
//! line gives a key away. Nothing here is ever formatted with a key in it.
//! The file is re-read on SIGHUP (`reload`); a file that does not parse
//! keeps the keys in force.
//!
//! It knows nothing of HTTP: which route needs which role is `api/guard.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every route.
    Admin,
    /// Running and reading models.
    Inference,
}

/// A secret from the environment: never printed, not even by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The largest key file read: a few thousand keys.
const MAX_KEY_FILE: u64 = 1 << 20;
/// The longest key accepted (in a file, the environment or a request).
pub const MAX_KEY_LEN: usize = 4096;

/// The keys in force.
#[derive(Default)]
pub struct Keys {
    hashes: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.hashes.len())
    }
}

impl Keys {
    /// No key configured: the API is open, as Ollama's.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// How many keys of each role: (admin, inference).
    pub fn counts(&self) -> (usize, usize) {
        let admin = self
            .hashes
            .iter()
            .filter(|(_, r)| *r == Role::Admin)
            .count();
        (admin, self.hashes.len() - admin)
    }

    fn add(&mut self, key: &str, role: Role) {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.hashes.push((hash, role));
    }

    /// The role of a presented token, if it is a key. Every stored hash is
    /// compared in full whatever matches, so the time does not depend on
    /// which key (or how much of one) matched; an admin match wins.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        if token.is_empty() || token.len() > MAX_KEY_LEN {
            return None;
        }
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, role) in &self.hashes {
            let diff = hash
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            let hit = std::hint::black_box(diff) == 0;
            if hit && found != Some(Role::Admin) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Parses a key file: one key per line, optionally followed by whitespace
/// and `admin` or `inference` (default admin); `#` comments and blank lines
/// are ignored. Errors name the line, never the key.
pub fn parse_key_file(text: &str) -> Result<Vec<(String, Role)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or("");
        let role = match words.next() {
            None | Some("admin") => Role::Admin,
            Some("inference") => Role::Inference,
            Some(_) => {
                return Err(format!(
                    "line {}: the role after a key is `admin` or `inference`",
                    i + 1
                ))
            }
        };
        if words.next().is_some() {
            return Err(format!("line {}: a key, then at most a role", i + 1));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(format!(
                "line {}: a key is at most {MAX_KEY_LEN} bytes",
                i + 1
            ));
        }
        out.push((key.to_string(), role));
    }
    Ok(out)
}

/// The keys of the environment plus those of the file, swapped whole on
/// reload.
#[derive(Debug)]
pub struct KeyStore {
    env: Vec<(Secret, Role)>,
    file: Option<PathBuf>,
    current: RwLock<Arc<Keys>>,
}

impl KeyStore {
    /// Builds the keys in force at start. A key file that cannot be read or
    /// parsed is an error: a box that was meant to be locked must not start
    /// open.
    pub fn new(
        admin: &[Secret],
        inference: &[Secret],
        file: Option<&Path>,
    ) -> Result<KeyStore, String> {
        let env: Vec<(Secret, Role)> = admin
            .iter()
            .map(|k| (k.clone(), Role::Admin))
            .chain(inference.iter().map(|k| (k.clone(), Role::Inference)))
            .collect();
        let store = KeyStore {
            env,
            file: file.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(Keys::default())),
        };
        let keys = store.build()?;
        *store.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(store)
    }

    fn build(&self) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for (k, role) in &self.env {
            if !k.0.is_empty() {
                keys.add(&k.0, *role);
            }
        }
        if let Some(path) = &self.file {
            let text = read_limited(path)?;
            for (k, role) in
                parse_key_file(&text).map_err(|e| format!("{}: {e}", path.display()))?
            {
                keys.add(&k, role);
            }
        }
        Ok(keys)
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<Keys> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the key file; on failure the old keys stay and the reason
    /// comes back.
    pub fn reload(&self) -> Result<(usize, usize), String> {
        let keys = self.build()?;
        let counts = keys.counts();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(counts)
    }
}

fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "{}: larger than {MAX_KEY_FILE} bytes",
            path.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_roles_comments_and_refuse_junk() {
        let keys = parse_key_file("# fleet keys\nk1\nk2 inference  # kiosk\n\n  k3 admin\n");
        assert_eq!(
            keys,
            Ok(vec![
                ("k1".into(), Role::Admin),
                ("k2".into(), Role::Inference),
                ("k3".into(), Role::Admin)
            ])
        );
        let bad = parse_key_file("k1\nsecret-key operator\n").unwrap_err();
        assert!(
            bad.starts_with("line 2:") && !bad.contains("secret-key"),
            "{bad}"
        );
    }

    #[test]
    fn roles_come_from_the_hash_and_admin_wins() {
        let s = KeyStore::new(
            &[Secret("a".into())],
            &[Secret("i".into()), Secret("a".into())],
            None,
        )
        .expect("keys");
        let k = s.current();
        assert_eq!(k.role_of("a"), Some(Role::Admin));
        assert_eq!(k.role_of("i"), Some(Role::Inference));
        assert_eq!(k.role_of("x"), None);
        assert_eq!(k.role_of(""), None);
        assert_eq!(format!("{:?}", Secret("a".into())), "Secret(..)");
    }
}
