//! What exactly is executed: the interpreter, its arguments, the working directory and
//! a clean environment (a few basics from the worker, the run's identity, and the
//! parameters). Secrets are deliberately absent here: they travel on stdin.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use worker_sdk::HandlerError;

use crate::{
    policy::ScriptPolicy,
    settings::{Interpreter, Source},
};

/// Variables passed through from the worker's own environment; everything else in it
/// stays out of the script's.
const PASSED_THROUGH: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A fully resolved command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCommand {
    pub program: String,
    pub args: Vec<OsString>,
    pub work_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Who is running the script, for the `PLUGHOST_*` variables.
#[derive(Debug, Clone, Default)]
pub struct RunIdentity {
    pub script_name: String,
    pub job_id: String,
    pub attempt: i32,
}

impl ScriptCommand {
    /// Resolves the command. A script file must lie inside the policy's directory
    /// (after resolving symlinks and `..`).
    pub fn new(
        policy: &ScriptPolicy,
        interpreter: Interpreter,
        source: &Source,
        parameters: &[(String, String)],
        who: &RunIdentity,
    ) -> Result<ScriptCommand, HandlerError> {
        let work_dir = policy.work_dir.clone();
        let args: Vec<OsString> = match source {
            Source::Inline(text) => match interpreter {
                // `$0` is the script's name in messages from the shell.
                Interpreter::Sh | Interpreter::Bash => {
                    vec!["-c".into(), text.into(), format!("script:{}", who.script_name).into()]
                }
                Interpreter::Python3 => vec!["-c".into(), text.into()],
            },
            Source::File(file) => vec![resolve_file(&work_dir, file)?.into_os_string()],
        };
        let mut env: Vec<(String, String)> =
            PASSED_THROUGH.iter().filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v))).collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        env.push(("PLUGHOST_SCRIPT_NAME".into(), who.script_name.clone()));
        env.push(("PLUGHOST_JOB_ID".into(), who.job_id.clone()));
        env.push(("PLUGHOST_ATTEMPT".into(), who.attempt.to_string()));
        env.push(("PLUGHOST_WORK_DIR".into(), work_dir.to_string_lossy().into_owned()));
        env.extend(parameters.iter().cloned());
        Ok(ScriptCommand { program: interpreter.program().to_string(), args, work_dir, env })
    }

    /// The command, ready to spawn: clean environment, its own process group, piped
    /// stdin/stdout/stderr, killed if dropped.
    pub fn to_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args)
            .current_dir(&self.work_dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        c
    }
}

/// `file` below `dir`, refusing anything that resolves outside it.
fn resolve_file(dir: &Path, file: &Path) -> Result<PathBuf, HandlerError> {
    if file.is_absolute() {
        return Err(format!("script file {} must be relative to the scripts directory", file.display()).into());
    }
    let base = dir.canonicalize().map_err(|e| format!("scripts directory {}: {e}", dir.display()))?;
    let path = base.join(file).canonicalize().map_err(|e| format!("script file {}: {e}", file.display()))?;
    if !path.starts_with(&base) {
        return Err(format!("script file {} is outside the scripts directory", file.display()).into());
    }
    if !path.is_file() {
        return Err(format!("script file {} is not a file", file.display()).into());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_files_must_stay_inside_the_scripts_directory() {
        let dir = std::env::temp_dir().join(format!("script-runner-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/ok.sh"), "true").unwrap();
        assert!(resolve_file(&dir, Path::new("sub/ok.sh")).is_ok());
        assert!(resolve_file(&dir, Path::new("sub/../sub/ok.sh")).is_ok());
        assert!(resolve_file(&dir, Path::new("../etc/passwd")).is_err());
        assert!(resolve_file(&dir, Path::new("/etc/passwd")).is_err());
        assert!(resolve_file(&dir, Path::new("sub")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_environment_is_clean_and_carries_the_parameters() {
        let policy = ScriptPolicy::allowed("/tmp");
        let who = RunIdentity { script_name: "s".into(), job_id: "j1".into(), attempt: 2 };
        let params = [("GREETING".to_string(), "hi".to_string())];
        let c = ScriptCommand::new(&policy, Interpreter::Sh, &Source::Inline("true".into()), &params, &who).unwrap();
        assert_eq!(c.program, "sh");
        assert_eq!(c.args[0], "-c");
        let get = |k: &str| c.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GREETING"), Some("hi"));
        assert_eq!(get("PLUGHOST_JOB_ID"), Some("j1"));
        assert_eq!(get("PLUGHOST_ATTEMPT"), Some("2"));
        assert!(get("PATH").is_some());
    }
}
