//! Records the git commit the admin is built from (for `/api/plugin/status`). A
//! `PLUGHOST_GIT_COMMIT` set in the environment wins; outside a git checkout it is
//! "unknown".

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=PLUGHOST_GIT_COMMIT");
    if std::env::var_os("PLUGHOST_GIT_COMMIT").is_some() {
        return;
    }
    // Watch only files that exist: Cargo reruns a build script on every build when a
    // watched path is missing, which would recompile the admin every time.
    let git_dir = Path::new("../.git");
    let mut watch = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        watch.push(git_dir.join(reference));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PLUGHOST_GIT_COMMIT={commit}");
}
