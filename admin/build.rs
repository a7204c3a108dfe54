//! Records the git commit the admin is built from (for `/api/plugin/status`). A
//! `PLUGHOST_GIT_COMMIT` set in the environment wins; outside a git checkout it is
//! "unknown".

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=PLUGHOST_GIT_COMMIT");
    if std::env::var_os("PLUGHOST_GIT_COMMIT").is_some() {
        return;
    }
    let git_dir = Path::new("../.git");
    if git_dir.exists() {
        println!("cargo:rerun-if-changed=../.git/HEAD");
        if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed=../.git/{reference}");
        }
        println!("cargo:rerun-if-changed=../.git/packed-refs");
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
