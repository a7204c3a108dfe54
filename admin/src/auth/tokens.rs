//! API tokens: named, with a role, kept hashed in `<data>/plugin/tokens.json` (0600).
//! The plaintext is shown once, when the token is created, and never stored. The file is
//! re-read when it changes on disk, so `plughost token create|revoke` take effect in a
//! running admin.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::Role;

/// The prefix of every token this admin issues (easy to spot in a leaked file or log).
const PREFIX: &str = "pht_";
/// Longest token name.
const MAX_NAME: usize = 64;
/// Most tokens one admin keeps.
const MAX_TOKENS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name must be 1 to {MAX_NAME} letters, digits, '_', '.', '-' or '@'")]
    BadName,
    #[error("a token named {0:?} exists already")]
    Exists(String),
    #[error("no token named {0:?}")]
    NotFound(String),
    #[error("this admin keeps at most {MAX_TOKENS} tokens; revoke some first")]
    TooMany,
    #[error("token file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

/// A token as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    info: TokenInfo,
    /// SHA-256 of the token, hex. Tokens are 256 random bits, so a plain hash is enough:
    /// there is nothing to guess that a slow hash would protect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// Instead of a token: the SHA-256 (hex) of a client certificate (DER) that names this
    /// identity on an HTTPS listener with `--http-client-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_sha256: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<Entry>,
}

pub struct TokenStore {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    entries: Vec<Entry>,
    modified: Option<SystemTime>,
}

pub fn hash(token: &str) -> String {
    crate::identity::fingerprint(token.as_bytes())
}

/// The SHA-256 (hex) of the first certificate in a PEM file's bytes: what an HTTPS
/// client presenting that certificate is known by.
pub fn certificate_fingerprint(pem: &[u8]) -> Result<String, String> {
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or("no certificate in the PEM data")?
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    Ok(crate::identity::fingerprint(der.as_ref()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
}

impl TokenStore {
    /// Opens (without creating) the token file of a data dir.
    pub fn open(data_dir: &Path) -> Result<TokenStore, TokenError> {
        let store =
            TokenStore { path: data_dir.join("plugin").join("tokens.json"), state: Mutex::new(Loaded::default()) };
        store.refresh()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_error(&self, message: impl std::fmt::Display) -> TokenError {
        TokenError::File { path: self.path.clone(), message: message.to_string() }
    }

    /// Re-reads the file if it changed since the last read.
    fn refresh(&self) -> Result<(), TokenError> {
        let modified = match std::fs::metadata(&self.path) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.file_error(e)),
        };
        let mut state = self.state.lock().expect("token store lock");
        if modified.is_some() && state.modified == modified {
            return Ok(());
        }
        let entries = match modified {
            None => Vec::new(),
            Some(_) => {
                let bytes = std::fs::read(&self.path).map_err(|e| self.file_error(e))?;
                serde_json::from_slice::<File>(&bytes).map_err(|e| self.file_error(e))?.tokens
            }
        };
        *state = Loaded { entries, modified };
        Ok(())
    }

    fn save(&self, state: &mut Loaded) -> Result<(), TokenError> {
        let file = File { tokens: state.entries.clone() };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| self.file_error(e))?;
        crate::fsutil::write_atomic_private(&self.path, &bytes).map_err(|e| self.file_error(e))?;
        state.modified = std::fs::metadata(&self.path).ok().and_then(|m| m.modified().ok());
        Ok(())
    }

    /// Adds a new named credential (a token's hash or a certificate's fingerprint).
    fn add(
        &self,
        name: &str,
        role: Role,
        now_ms: i64,
        sha256: Option<String>,
        certificate_sha256: Option<String>,
    ) -> Result<(), TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadName);
        }
        self.refresh()?;
        let mut state = self.state.lock().expect("token store lock");
        if state.entries.iter().any(|e| e.info.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        if state.entries.len() >= MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        let info = TokenInfo { name: name.to_string(), role, created_at: now_ms };
        state.entries.push(Entry { info, sha256, certificate_sha256 });
        self.save(&mut state)
    }

    /// Creates a token and returns its plaintext (shown once, never stored).
    pub fn create(&self, name: &str, role: Role, now_ms: i64) -> Result<String, TokenError> {
        let token = format!("{PREFIX}{}", crate::random::hex(32));
        self.add(name, role, now_ms, Some(hash(&token)), None)?;
        Ok(token)
    }

    /// Maps a client certificate (by its SHA-256 fingerprint) to a named identity.
    pub fn add_certificate(&self, name: &str, role: Role, fingerprint: &str, now_ms: i64) -> Result<(), TokenError> {
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.file_error("a certificate fingerprint is 64 hex digits (SHA-256)"));
        }
        self.add(name, role, now_ms, None, Some(fingerprint))
    }

    /// The identity a client certificate (by fingerprint) was mapped to, if any.
    pub fn verify_certificate(&self, fingerprint: &str) -> Option<TokenInfo> {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "token file unreadable; keeping the tokens read before");
        }
        let state = self.state.lock().expect("token store lock");
        state.entries.iter().find(|e| e.certificate_sha256.as_deref() == Some(fingerprint)).map(|e| e.info.clone())
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        self.refresh()?;
        Ok(self.state.lock().expect("token store lock").entries.iter().map(|e| e.info.clone()).collect())
    }

    pub fn revoke(&self, name: &str) -> Result<TokenInfo, TokenError> {
        self.refresh()?;
        let mut state = self.state.lock().expect("token store lock");
        let at = state.entries.iter().position(|e| e.info.name == name).ok_or(TokenError::NotFound(name.into()))?;
        let removed = state.entries.remove(at);
        self.save(&mut state)?;
        Ok(removed.info)
    }

    pub fn is_empty(&self) -> Result<bool, TokenError> {
        Ok(self.list()?.is_empty())
    }

    /// The token's name and role, if it is one of ours.
    pub fn verify(&self, token: &str) -> Option<TokenInfo> {
        if !token.starts_with(PREFIX) || token.len() > 128 {
            return None;
        }
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "token file unreadable; keeping the tokens read before");
        }
        let digest = hash(token);
        let state = self.state.lock().expect("token store lock");
        // Compared in constant time, though a hash of a random token leaks nothing useful.
        state
            .entries
            .iter()
            .find(|e| {
                e.sha256.as_ref().is_some_and(|h| crate::secrets::constant_time_eq(h.as_bytes(), digest.as_bytes()))
            })
            .map(|e| e.info.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn a_created_token_verifies_is_stored_only_as_a_hash_and_stops_working_when_revoked() {
        let dir = TempDir::new("tokens");
        let store = TokenStore::open(&dir.0).unwrap();
        let token = store.create("ci", Role::Operator, 5).unwrap();
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 64);
        assert_eq!(store.verify(&token).unwrap(), TokenInfo { name: "ci".into(), role: Role::Operator, created_at: 5 });
        assert!(store.verify("pht_nope").is_none());
        let file = std::fs::read_to_string(store.path()).unwrap();
        assert!(!file.contains(&token), "the plaintext is never written");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(store.create("ci", Role::Viewer, 6), Err(TokenError::Exists(_))));
        assert!(matches!(store.create("bad name", Role::Viewer, 6), Err(TokenError::BadName)));
        store.revoke("ci").unwrap();
        assert!(store.verify(&token).is_none());
    }

    #[test]
    fn a_token_created_by_another_process_is_seen_without_a_restart() {
        let dir = TempDir::new("tokens-reload");
        let running = TokenStore::open(&dir.0).unwrap();
        assert!(running.is_empty().unwrap());
        let cli = TokenStore::open(&dir.0).unwrap();
        let token = cli.create("later", Role::Viewer, 1).unwrap();
        assert_eq!(running.verify(&token).map(|t| t.name), Some("later".to_string()));
    }
}
