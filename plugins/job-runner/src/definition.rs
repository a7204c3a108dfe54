//! Job definitions: the named entries of the `definitions` field (a JSON object edited
//! in the admin's form), read and checked. A definition pins its code (a git tag, a
//! tarball with its SHA-256, or a local tarball), names its entry command and runtime,
//! and sets its environment, the secrets it may read, its limits and its schedule.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::runtime::Runtime;

/// Longest timeout a definition may set (one day).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 600;
pub const DEFAULT_MEMORY_MB: u64 = 1024;
pub const DEFAULT_OUTPUT_LIMIT_BYTES: usize = 64 * 1024;
pub const MAX_OUTPUT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// Where a definition's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A tag of a repository on the worker's `--job-repo-allowlist`, cloned shallow.
    GitTag {
        repo: String,
        tag: String,
        #[serde(default)]
        path: String,
    },
    /// An HTTPS tarball (`.tar` or `.tar.gz`) whose SHA-256 is given.
    TarballUrl {
        url: String,
        sha256: String,
        #[serde(default)]
        path: String,
    },
    /// A tarball below the worker's `--job-tarball-dir`.
    TarballPath {
        file: String,
        #[serde(default)]
        sha256: Option<String>,
        #[serde(default)]
        path: String,
    },
}

impl SourceSpec {
    /// The subdirectory of the source that is the working directory ("" for its root).
    pub fn path(&self) -> &str {
        match self {
            SourceSpec::GitTag { path, .. }
            | SourceSpec::TarballUrl { path, .. }
            | SourceSpec::TarballPath { path, .. } => path,
        }
    }

    /// One line naming the pinned source, recorded in each job's parameters.
    pub fn pin(&self) -> String {
        match self {
            SourceSpec::GitTag { repo, tag, .. } => format!("git_tag {repo}@{tag}"),
            SourceSpec::TarballUrl { url, sha256, .. } => format!("tarball_url {url} sha256:{}", sha256.to_lowercase()),
            SourceSpec::TarballPath { file, sha256, .. } => match sha256 {
                Some(sum) => format!("tarball_path {file} sha256:{}", sum.to_lowercase()),
                None => format!("tarball_path {file}"),
            },
        }
    }
}

/// A definition as written in the form (plain JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    #[serde(default)]
    description: String,
    source: SourceSpec,
    entry: String,
    runtime: String,
    #[serde(default)]
    env: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    schedule_minutes: u64,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    require_sandbox: Option<bool>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    cpu_seconds: u64,
    #[serde(default)]
    output_limit_bytes: Option<usize>,
}

/// One checked definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub description: String,
    pub source: SourceSpec,
    /// The program, relative to the working directory, then its arguments.
    pub entry: Vec<String>,
    pub runtime: Runtime,
    pub env: Vec<(String, String)>,
    /// Names of the job type's secrets this definition receives on stdin.
    pub secrets: Vec<String>,
    pub timeout: Duration,
    /// Attempts after the first; a later attempt is refused without running.
    pub retries: u32,
    /// Proposed by detection every this many minutes; 0: only on demand.
    pub schedule_minutes: u64,
    /// Whether the sandbox keeps the host's network.
    pub network: bool,
    /// Refused on a worker that cannot sandbox (the default).
    pub require_sandbox: bool,
    /// Address-space limit (RLIMIT_AS) in MiB; 0: none.
    pub memory_mb: u64,
    /// CPU-time limit (RLIMIT_CPU) in seconds; 0: none.
    pub cpu_seconds: u64,
    pub output_limit: usize,
}

/// Whether `name` may name a definition (or a secret).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Whether `name` may be an environment variable a definition sets.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("PLUGHOST_")
        && !matches!(name, "PATH" | "HOME" | "TMPDIR" | "PYTHONPATH" | "NODE_PATH" | "LD_PRELOAD" | "LD_LIBRARY_PATH")
}

/// A relative path inside a source: no `..`, not absolute, no empty or `.` segments
/// beyond a trailing slash.
pub fn valid_relative(path: &str) -> bool {
    !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').filter(|s| !s.is_empty()).all(|segment| segment != ".." && segment != ".")
}

impl Definition {
    /// Reads the definition `name` from its JSON.
    pub fn parse(name: &str, json: &serde_json::Value) -> Result<Definition, String> {
        if !valid_name(name) {
            return Err(format!("definition name {name:?} must be 1-64 letters, digits, '_', '.' or '-'"));
        }
        let w: Written = serde_json::from_value(json.clone()).map_err(|e| format!("definition {name}: {e}"))?;
        let runtime = Runtime::parse(&w.runtime).map_err(|e| format!("definition {name}: {e}"))?;
        if !valid_relative(w.source.path()) {
            return Err(format!("definition {name}: source path {:?} must be relative, without '..'", w.source.path()));
        }
        match &w.source {
            SourceSpec::GitTag { tag, .. } if tag.trim().is_empty() => {
                return Err(format!("definition {name}: a git_tag source needs a tag"));
            }
            SourceSpec::TarballUrl { sha256, .. } if !crate::sources::valid_sha256(sha256) => {
                return Err(format!("definition {name}: sha256 must be 64 hex digits"));
            }
            SourceSpec::TarballPath { sha256: Some(sum), .. } if !crate::sources::valid_sha256(sum) => {
                return Err(format!("definition {name}: sha256 must be 64 hex digits"));
            }
            _ => {}
        }
        let entry: Vec<String> = w.entry.split_whitespace().map(str::to_string).collect();
        match entry.first() {
            None => return Err(format!("definition {name}: entry is empty")),
            Some(program) if !valid_relative(program) => {
                return Err(format!(
                    "definition {name}: entry program {program:?} must be a file relative to the source, without '..'"
                ));
            }
            Some(_) => {}
        }
        let mut env = Vec::new();
        for (key, value) in &w.env {
            if !valid_env_name(key) {
                return Err(format!(
                    "definition {name}: {key:?} cannot be an environment variable (letters, digits and '_'; not PLUGHOST_*, PATH, HOME and the like)"
                ));
            }
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => other.to_string(),
            };
            if text.contains('\0') {
                return Err(format!("definition {name}: the value of {key} contains a NUL byte"));
            }
            env.push((key.clone(), text));
        }
        if let Some(bad) = w.secrets.iter().find(|s| !valid_name(s)) {
            return Err(format!("definition {name}: secret name {bad:?} is not valid"));
        }
        let timeout = w.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout) {
            return Err(format!("definition {name}: timeout_seconds must be 1 to {MAX_TIMEOUT_SECONDS}"));
        }
        let output_limit = w.output_limit_bytes.unwrap_or(DEFAULT_OUTPUT_LIMIT_BYTES);
        if !(256..=MAX_OUTPUT_LIMIT_BYTES).contains(&output_limit) {
            return Err(format!("definition {name}: output_limit_bytes must be 256 to {MAX_OUTPUT_LIMIT_BYTES}"));
        }
        if w.retries > 100 {
            return Err(format!("definition {name}: retries must be 0 to 100"));
        }
        Ok(Definition {
            name: name.to_string(),
            description: w.description,
            source: w.source,
            entry,
            runtime,
            env,
            secrets: w.secrets,
            timeout: Duration::from_secs(timeout),
            retries: w.retries,
            schedule_minutes: w.schedule_minutes,
            network: w.network,
            require_sandbox: w.require_sandbox.unwrap_or(true),
            memory_mb: w.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
            cpu_seconds: w.cpu_seconds,
            output_limit,
        })
    }

    /// Every definition of the `definitions` object; an entry that does not parse is an
    /// error naming it.
    pub fn parse_all(all: &serde_json::Value) -> Result<Vec<Definition>, String> {
        match all {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::Object(map) => map.iter().map(|(name, json)| Definition::parse(name, json)).collect(),
            _ => Err("definitions must be a JSON object of name: definition".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({
            "source": {"kind": "git_tag", "repo": "/srv/repo.git", "tag": "v1"},
            "entry": "run.sh --fast",
            "runtime": "shell",
        })
    }

    #[test]
    fn a_minimal_definition_gets_the_defaults() {
        let d = Definition::parse("nightly", &minimal()).unwrap();
        assert_eq!(d.entry, ["run.sh", "--fast"]);
        assert_eq!(d.runtime, Runtime::Shell);
        assert!(d.require_sandbox);
        assert!(!d.network);
        assert_eq!(d.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECONDS));
        assert_eq!(d.source.pin(), "git_tag /srv/repo.git@v1");
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let cases = [
            (json!({"entry": "../x"}), "entry program"),
            (json!({"entry": "/bin/sh"}), "entry program"),
            (json!({"entry": ""}), "entry is empty"),
            (json!({"runtime": "cobol"}), "runtime"),
            (json!({"env": {"PATH": "/tmp"}}), "environment variable"),
            (json!({"env": {"PLUGHOST_X": "1"}}), "environment variable"),
            (json!({"timeout_seconds": 0}), "timeout_seconds"),
            (json!({"source": {"kind": "tarball_url", "url": "https://x/y.tgz", "sha256": "abc"}}), "sha256"),
            (json!({"source": {"kind": "git_tag", "repo": "r", "tag": "v1", "path": "../up"}}), "source path"),
            (json!({"surprise": 1}), "unknown field"),
        ];
        for (patch, expected) in cases {
            let mut v = minimal();
            v.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
            let err = Definition::parse("d", &v).unwrap_err();
            assert!(err.contains(expected), "{patch}: {err}");
        }
        assert!(Definition::parse("no spaces", &minimal()).is_err());
    }
}
