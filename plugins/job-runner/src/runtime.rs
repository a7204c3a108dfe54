//! Runtimes: `shell`, `python` and `node`. At start the worker looks for each
//! interpreter (its real path and install prefix, so the sandbox can mount it), and
//! writes the secret helpers the code may use: `get_secret NAME` for the shell (source
//! `$PLUGHOST_HELPERS/plughost.sh`), `from plughost import get_secret` for Python,
//! `require('plughost').getSecret(name)` for Node. Each helper reads the JSON secrets
//! from stdin once; nothing puts a secret in an environment or a command line.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    Shell,
    Python,
    Node,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Shell, Runtime::Python, Runtime::Node];

    pub fn parse(name: &str) -> Result<Runtime, String> {
        match name {
            "shell" | "sh" => Ok(Runtime::Shell),
            "python" | "python3" => Ok(Runtime::Python),
            "node" => Ok(Runtime::Node),
            other => Err(format!("unknown runtime {other:?}; use shell, python or node")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Shell => "shell",
            Runtime::Python => "python",
            Runtime::Node => "node",
        }
    }

    /// The program looked up in `PATH`, and how to ask it for its real path and prefix.
    fn probe(&self) -> (&'static str, &'static [&'static str]) {
        match self {
            Runtime::Shell => ("sh", &[]),
            Runtime::Python => ("python3", &["-c", "import sys; print(sys.executable); print(sys.prefix)"]),
            Runtime::Node => ("node", &["-e", "console.log(process.execPath)"]),
        }
    }
}

/// An interpreter found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub runtime: Runtime,
    /// The real executable (a version manager's shim resolved).
    pub program: PathBuf,
    /// Its install prefix when that lies outside the system directories the sandbox
    /// mounts anyway (a pyenv or nvm install); mounted read-only too.
    pub extra_prefix: Option<PathBuf>,
}

/// The interpreters this worker has, found once at start.
#[derive(Debug, Clone, Default)]
pub struct Interpreters {
    found: Vec<Interpreter>,
}

/// Directories the sandbox mounts read-only in any case.
pub const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

fn in_system_dirs(path: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
}

/// `name` looked up in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    })
}

impl Interpreters {
    /// Looks for every runtime's interpreter.
    pub fn discover() -> Interpreters {
        Interpreters { found: Runtime::ALL.iter().filter_map(|r| find(*r)).collect() }
    }

    pub fn get(&self, runtime: Runtime) -> Option<&Interpreter> {
        self.found.iter().find(|i| i.runtime == runtime)
    }

    /// "shell, python" or "none".
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.found.iter().map(|i| i.runtime.name()).collect();
        if names.is_empty() { "none".into() } else { names.join(", ") }
    }

    /// Every extra prefix to mount.
    pub fn extra_prefixes(&self) -> impl Iterator<Item = &Path> {
        self.found.iter().filter_map(|i| i.extra_prefix.as_deref())
    }
}

fn find(runtime: Runtime) -> Option<Interpreter> {
    let (name, probe) = runtime.probe();
    let found = which(name)?;
    let (program, prefix) = if probe.is_empty() {
        (found.canonicalize().ok()?, None)
    } else {
        let out = Command::new(&found).args(probe).stdin(std::process::Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines();
        let program = PathBuf::from(lines.next()?.trim()).canonicalize().ok()?;
        let prefix = match lines.next() {
            Some(p) => PathBuf::from(p.trim()),
            // node: <prefix>/bin/node
            None => program.parent()?.parent()?.to_path_buf(),
        };
        (program, Some(prefix))
    };
    let extra_prefix = prefix
        .or_else(|| program.parent().map(Path::to_path_buf))
        .filter(|p| !in_system_dirs(p) && !in_system_dirs(&program) && p.is_absolute() && p != Path::new("/"));
    Some(Interpreter { runtime, program, extra_prefix })
}

/// The shell helper: source it, then `get_secret NAME`. It reads stdin once when sourced
/// (a `$(get_secret x)` runs in a subshell, which could not keep what it read); the
/// secrets stay in an unexported shell variable and reach awk through a pipe.
pub const SHELL_HELPER: &str = r#"# Plughost job runner helpers. Source this file:
#   . "$PLUGHOST_HELPERS/plughost.sh"
# then read a secret with get_secret NAME (prints it without a newline).
__plughost_secrets=$(cat)
get_secret() {
  printf '%s\n' "$__plughost_secrets" | awk -v want="$1" '
    function hexval(h,   i, c, n) {
      n = 0
      for (i = 1; i <= length(h); i++) {
        c = index("0123456789abcdef", tolower(substr(h, i, 1))) - 1
        n = n * 16 + c
      }
      return n
    }
    BEGIN { found = 0 }
    index($0, "\"" want "\": \"") == 1 {
      s = substr($0, length(want) + 6)
      sub(/",?$/, "", s)
      out = ""
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c != "\\") { out = out c; continue }
        i++
        c = substr(s, i, 1)
        if (c == "n") out = out "\n"
        else if (c == "t") out = out "\t"
        else if (c == "r") out = out "\r"
        else if (c == "b") out = out "\b"
        else if (c == "f") out = out "\f"
        else if (c == "u") { out = out sprintf("%c", hexval(substr(s, i + 1, 4))); i += 4 }
        else out = out c
      }
      printf "%s", out
      found = 1
      exit
    }
    END { if (!found) { print "get_secret: no secret named " want > "/dev/stderr"; exit 1 } }'
}
"#;

/// The Python helper: `from plughost import get_secret, set_result`.
pub const PYTHON_HELPER: &str = r#""""Plughost job runner helpers: get_secret(name) reads the secrets from stdin once."""
import json
import os
import sys

_secrets = None


def get_secret(name):
    """The secret `name`; the secrets arrive on stdin as one JSON object."""
    global _secrets
    if _secrets is None:
        data = sys.stdin.read()
        _secrets = json.loads(data) if data.strip() else {}
    if name not in _secrets:
        raise KeyError("no secret named %s" % name)
    return _secrets[name]


def set_result(**fields):
    """Writes the job's structured result to $PLUGHOST_RESULT."""
    with open(os.environ["PLUGHOST_RESULT"], "w") as f:
        json.dump(fields, f)


def artifacts_dir():
    """Files written here are returned to the admin as the job's artifacts."""
    return os.environ["PLUGHOST_ARTIFACTS"]
"#;

/// The Node helper: `const { getSecret } = require('plughost')`.
pub const NODE_HELPER: &str = r#"// Plughost job runner helpers: getSecret(name) reads the secrets from stdin once.
'use strict';
const fs = require('fs');
let secrets = null;

function getSecret(name) {
  if (secrets === null) {
    const data = fs.readFileSync(0, 'utf8');
    secrets = data.trim() ? JSON.parse(data) : {};
  }
  if (!Object.prototype.hasOwnProperty.call(secrets, name)) throw new Error('no secret named ' + name);
  return secrets[name];
}

function setResult(fields) {
  fs.writeFileSync(process.env.PLUGHOST_RESULT, JSON.stringify(fields));
}

module.exports = { getSecret, get_secret: getSecret, setResult, artifactsDir: () => process.env.PLUGHOST_ARTIFACTS };
"#;

/// Writes the helpers into `dir` (`plughost.sh`, `plughost.py`, `plughost.js` and
/// `node_modules/plughost.js`, so `require('plughost')` works with `NODE_PATH`).
pub fn write_helpers(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("plughost.sh"), SHELL_HELPER)?;
    std::fs::write(dir.join("plughost.py"), PYTHON_HELPER)?;
    std::fs::write(dir.join("plughost.js"), NODE_HELPER)?;
    Ok(())
}

/// The secrets as the JSON document on stdin: one object, one member per line, values
/// as strings (the shell helper reads it line by line).
pub fn secrets_document(secrets: &[(String, String)]) -> String {
    let mut doc = String::from("{\n");
    for (i, (name, value)) in secrets.iter().enumerate() {
        let comma = if i + 1 < secrets.len() { "," } else { "" };
        doc.push_str(&format!(
            "{}: {}{comma}\n",
            serde_json::Value::from(name.as_str()),
            serde_json::Value::from(value.as_str())
        ));
    }
    doc.push_str("}\n");
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_document_is_json_with_one_member_per_line() {
        let doc = secrets_document(&[("a".into(), "x\"y\n".into()), ("b".into(), "2".into())]);
        assert_eq!(doc, "{\n\"a\": \"x\\\"y\\n\",\n\"b\": \"2\"\n}\n");
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["a"], "x\"y\n");
    }

    #[test]
    fn the_shell_helper_decodes_what_the_document_escapes() {
        let dir = std::env::temp_dir().join(format!("job-runner-helper-{}", std::process::id()));
        write_helpers(&dir).unwrap();
        let secrets = [("tok".to_string(), "a\"b\\c\td\u{1}é".to_string()), ("other".to_string(), "o".to_string())];
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(". ./plughost.sh; get_secret tok; printf '|'; get_secret other; get_secret missing || printf '|missing'")
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(secrets_document(&secrets).as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\"b\\c\td\u{1}é|o|missing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
