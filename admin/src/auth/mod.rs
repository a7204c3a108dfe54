//! Who is calling, and what they may do. Callers authenticate with an API token
//! (`Authorization: Bearer`), or on the pages with a session cookie obtained by signing
//! in with a token. Every identity has a role: `viewer` reads, `operator` runs and stops
//! work, `admin` also changes configs and manages tokens. With authentication off
//! (only allowed on loopback without scripts) every caller is a local admin.
//!
//! At first start, when no token exists, the admin creates one with the admin role and
//! writes it to `<data>/plugin/admin.token` (0600), so the operator can sign in.

pub mod sessions;
pub mod tokens;

use std::{path::Path, sync::Arc};

use serde::{Deserialize, Serialize};

pub use sessions::Sessions;
pub use tokens::{TokenError, TokenInfo, TokenStore};

/// What an identity may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether callers must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    #[default]
    On,
    /// Every caller is a local admin; only on loopback listeners without scripts.
    Off,
}

/// The admin's authentication state: its tokens and the pages' sessions.
pub struct Auth {
    pub mode: AuthMode,
    pub tokens: TokenStore,
    pub sessions: Sessions,
    /// When an unauthenticated request was last written to the audit trail.
    last_refusal_audit: std::sync::atomic::AtomicI64,
}

/// The job type of the bundled script runner. With authentication off, workers that
/// offer it are refused: anyone who reaches the admin could run code through it.
pub const SCRIPT_JOB_TYPE: &str = "script";

/// The job type of the bundled job runner (job definitions from pinned sources): it runs
/// operator code as the script runner does, and is guarded the same way.
pub const JOB_RUNNER_JOB_TYPE: &str = "job_runner";

/// Whether a job type runs operator-defined code: running it (a run, a retry, a
/// schedule, a hand-made job, a replay) needs the admin role, and an admin with
/// authentication off refuses workers that offer it.
pub fn runs_operator_code(job_type: &str) -> bool {
    job_type == SCRIPT_JOB_TYPE || job_type == JOB_RUNNER_JOB_TYPE
}

/// Where the first admin token is written.
pub fn admin_token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("plugin").join("admin.token")
}

impl Auth {
    /// Opens the token store; with authentication on and no token yet, creates the first
    /// admin token and writes it (0600) to `admin.token`. Returns that token when it was
    /// created now, so the caller can print a sign-in link.
    pub fn open(data_dir: &Path, mode: AuthMode, now_ms: i64) -> Result<(Arc<Auth>, Option<String>), TokenError> {
        let tokens = TokenStore::open(data_dir)?;
        let mut created = None;
        if mode == AuthMode::On && tokens.is_empty()? {
            let token = tokens.create("admin", Role::Admin, now_ms)?;
            let path = admin_token_path(data_dir);
            crate::fsutil::write_atomic_private(&path, format!("{token}\n").as_bytes())
                .map_err(|e| TokenError::File { path: path.clone(), message: e.to_string() })?;
            created = Some(token);
        }
        let auth = Auth { mode, tokens, sessions: Sessions::default(), last_refusal_audit: Default::default() };
        Ok((Arc::new(auth), created))
    }

    /// Whether a refused unauthenticated request should be written to the audit trail
    /// now: at most one a second, so a flood of them cannot flood the store.
    pub fn should_audit_refusal(&self, now_ms: i64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last_refusal_audit.load(Ordering::Relaxed);
        now_ms - last >= 1000
            && self.last_refusal_audit.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}
