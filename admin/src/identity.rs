//! Worker identity bound to credentials: when workers authenticate (a worker token, or a
//! client certificate on an mTLS gRPC listener), the first credential that registers a
//! worker_id owns it, and a stream with that id and another credential is refused. The
//! bindings persist in `<data>/plugin/worker_bindings.json` (SHA-256 fingerprints, never
//! the token itself). Tokens may be limited to worker_id patterns (`token@pattern`).
//!
//! Without worker authentication nothing tells one peer from another, so nothing is bound.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::{fsutil, input::shown, secrets::constant_time_eq};

/// The bindings file, under `<data>/plugin`.
pub const BINDINGS_FILE: &str = "worker_bindings.json";
/// Worker ids bound at most; a credential cannot grow the file without end.
pub const MAX_BINDINGS: usize = 10_000;

/// One `--worker-tokens` entry: `token`, or `token@pattern` where the pattern (a glob with
/// `*`) names the worker_ids the token may register.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerToken {
    pub secret: String,
    pub pattern: Option<String>,
}

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerToken").field("pattern", &self.pattern).finish_non_exhaustive()
    }
}

impl WorkerToken {
    /// Splits an entry at its last `@`: a token itself must not contain `@`.
    pub fn parse(entry: &str) -> Result<WorkerToken, String> {
        let entry = entry.trim();
        let (secret, pattern) = match entry.rsplit_once('@') {
            Some((secret, pattern)) => (secret, Some(pattern)),
            None => (entry, None),
        };
        if secret.is_empty() {
            return Err("a worker token entry has an empty token".into());
        }
        if pattern.is_some_and(str::is_empty) {
            return Err("a worker token entry ends in '@' without a worker_id pattern".into());
        }
        Ok(WorkerToken { secret: secret.to_string(), pattern: pattern.map(str::to_string) })
    }

    /// Whether this token may register `worker_id`.
    pub fn allows(&self, worker_id: &str) -> bool {
        self.pattern.as_deref().is_none_or(|p| glob_match(p, worker_id))
    }
}

/// Parses every `--worker-tokens` entry.
pub fn parse_tokens(entries: &[String]) -> Result<Vec<WorkerToken>, String> {
    entries.iter().map(|e| WorkerToken::parse(e)).collect()
}

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    // Where the last `*` was and the input position it was tried at (backtracking point).
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Hex SHA-256.
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a stream authenticated with, as stored in the bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn token(secret: &str) -> Credential {
        Credential(format!("token:sha256:{}", fingerprint(secret.as_bytes())))
    }

    /// `fingerprint` is the hex SHA-256 of the DER certificate.
    pub fn certificate(fingerprint: &str) -> Credential {
        Credential(format!("certificate:sha256:{fingerprint}"))
    }
}

/// Why a worker_id could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("worker_id {0} is bound to another credential")]
    Taken(String),
    #[error("worker_id {0} is not allowed for this worker token")]
    NotAllowed(String),
    #[error("the admin already binds {MAX_BINDINGS} worker ids; no more can be registered")]
    Full,
    #[error("the worker binding could not be saved: {0}")]
    Io(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Binding {
    credential: String,
    bound_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BindingsFile {
    bindings: BTreeMap<String, Binding>,
}

/// The worker tokens and the persisted worker_id bindings.
pub struct Identity {
    tokens: Vec<WorkerToken>,
    path: PathBuf,
    bindings: Mutex<BTreeMap<String, Binding>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("tokens", &self.tokens.len()).field("path", &self.path).finish()
    }
}

impl Identity {
    /// Parses the tokens and loads the bindings of `data_dir`. A bindings file that cannot
    /// be read is an error: starting without it would let anyone take over every worker.
    pub fn open(data_dir: &Path, token_entries: &[String]) -> Result<Identity, String> {
        let tokens = parse_tokens(token_entries)?;
        let path = data_dir.join("plugin").join(BINDINGS_FILE);
        let bindings = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<BindingsFile>(&bytes)
                    .map_err(|e| format!("{}: {e} (fix or remove the file)", path.display()))?
                    .bindings
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Identity { tokens, path, bindings: Mutex::new(bindings) })
    }

    /// Whether workers must present a token.
    pub fn requires_token(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token entry a presented bearer token matches.
    pub fn token(&self, presented: &str) -> Option<&WorkerToken> {
        self.tokens.iter().find(|t| constant_time_eq(t.secret.as_bytes(), presented.as_bytes()))
    }

    /// Binds `worker_id` to `credential` if it is not bound yet; refuses it if it is bound
    /// to another. Writes the file (blocking: call it off the async runtime).
    pub fn bind(&self, worker_id: &str, credential: &Credential, now_ms: i64) -> Result<(), BindError> {
        let mut bindings = self.bindings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = bindings.get(worker_id) {
            return if constant_time_eq(b.credential.as_bytes(), credential.0.as_bytes()) {
                Ok(())
            } else {
                Err(BindError::Taken(shown(worker_id)))
            };
        }
        if bindings.len() >= MAX_BINDINGS {
            return Err(BindError::Full);
        }
        bindings.insert(worker_id.to_string(), Binding { credential: credential.0.clone(), bound_at: now_ms });
        let file = BindingsFile { bindings: bindings.clone() };
        let written = serde_json::to_vec_pretty(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| fsutil::write_atomic_private(&self.path, &bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            bindings.remove(worker_id);
            return Err(BindError::Io(e));
        }
        tracing::info!(worker_id = %crate::text::clip(worker_id, 64), "worker_id bound to its credential");
        Ok(())
    }

    /// How many worker ids are bound.
    pub fn bound(&self) -> usize {
        self.bindings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn token_entries_take_an_optional_worker_id_pattern() {
        let t = WorkerToken::parse("s3cret").unwrap();
        assert_eq!((t.secret.as_str(), t.pattern.as_deref()), ("s3cret", None));
        assert!(t.allows("anything"));
        let t = WorkerToken::parse(" s3cret@vacuum-* ").unwrap();
        assert_eq!((t.secret.as_str(), t.pattern.as_deref()), ("s3cret", Some("vacuum-*")));
        assert!(t.allows("vacuum-1"));
        assert!(!t.allows("archive-1"));
        assert!(WorkerToken::parse("@w").is_err());
        assert!(WorkerToken::parse("t@").is_err());
    }

    #[test]
    fn globs_match_stars_anywhere() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a*c", "ac"));
        assert!(!glob_match("a*c", "acb"));
        assert!(glob_match("*-worker-*", "eu-worker-7"));
        assert!(glob_match("w?", "w?"));
        assert!(!glob_match("w?", "w1"));
        assert!(glob_match("a**b*", "aXbY"));
    }

    #[test]
    fn a_worker_id_stays_bound_to_its_first_credential_across_restarts() {
        let dir = TempDir::new("bindings");
        let id = Identity::open(&dir.0, &["a".into(), "b".into()]).unwrap();
        let (a, b) = (Credential::token("a"), Credential::token("b"));
        id.bind("w1", &a, 1).unwrap();
        id.bind("w1", &a, 2).unwrap();
        assert!(matches!(id.bind("w1", &b, 3), Err(BindError::Taken(_))));
        id.bind("w2", &b, 4).unwrap();
        let text = std::fs::read_to_string(dir.0.join("plugin").join(BINDINGS_FILE)).unwrap();
        assert!(!text.contains("\"a\"") && text.contains(&fingerprint(b"a")), "{text}");

        let reopened = Identity::open(&dir.0, &[]).unwrap();
        assert_eq!(reopened.bound(), 2);
        assert!(matches!(reopened.bind("w1", &b, 5), Err(BindError::Taken(_))));
        let cert = Credential::certificate(&fingerprint(b"der"));
        assert!(matches!(reopened.bind("w2", &cert, 6), Err(BindError::Taken(_))));
    }

    #[test]
    fn a_corrupt_bindings_file_keeps_the_admin_from_starting() {
        let dir = TempDir::new("bindings-corrupt");
        std::fs::create_dir_all(dir.0.join("plugin")).unwrap();
        std::fs::write(dir.0.join("plugin").join(BINDINGS_FILE), b"{not json").unwrap();
        assert!(Identity::open(&dir.0, &[]).unwrap_err().contains("worker_bindings.json"));
    }
}
