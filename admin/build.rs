//! Records the git commit the admin is built from (`plughost_build_info` in the metrics,
//! `/api/plugin/status`) as `PLUGHOST_GIT_COMMIT`. A `PLUGHOST_GIT_COMMIT` set in the
//! environment wins (a build from a source tarball can name its commit); without git, or
//! outside a checkout, it is "unknown", and the build goes on.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Runs git in the crate's directory; `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").current_dir(dir).args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PLUGHOST_GIT_COMMIT");
    if let Ok(commit) = std::env::var("PLUGHOST_GIT_COMMIT")
        && !commit.trim().is_empty()
    {
        println!("cargo:rustc-env=PLUGHOST_GIT_COMMIT={}", commit.trim());
        return;
    }
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    // Rebuild when HEAD moves: watch HEAD, the branch it names and packed-refs, where git
    // keeps them (`--git-path` also finds them for a linked worktree, whose `.git` is a
    // file). Only files that exist are watched: Cargo reruns a build script on every build
    // when a watched path is missing.
    let mut watch = Vec::new();
    if let Some(paths) = git(&dir, &["rev-parse", "--git-path", "HEAD", "--git-path", "packed-refs"]) {
        watch.extend(paths.lines().map(|p| dir.join(p)));
    }
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&dir, &["rev-parse", "--git-path", &branch])
    {
        watch.push(dir.join(path));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let commit = git(&dir, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PLUGHOST_GIT_COMMIT={commit}");
}
