//! A `git_tag` source: the repository must be on `--job-repo-allowlist`, the ref must
//! be a tag (a branch of the same name is never taken: only `refs/tags/<tag>` is
//! fetched), and the clone is shallow, made with the `git` binary. The checked-out tree
//! keeps no `.git` directory; the commit is reported.

use std::{path::Path, time::Duration};

use tokio::process::Command;

use crate::policy::allowlisted;

/// Whether `tag` is a plain tag name: no option-like start, no `..`, no characters git
/// refuses in ref names.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 200
        && !tag.starts_with('-')
        && !tag.starts_with('/')
        && !tag.ends_with('/')
        && !tag.ends_with(".lock")
        && !tag.contains("..")
        && !tag.contains("//")
        && !tag.contains("@{")
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c))
}

/// Checks the repository and tag before anything runs.
pub fn check(repo: &str, tag: &str, allowlist: &[String]) -> Result<(), String> {
    if repo.is_empty() || repo.starts_with('-') || repo.contains("::") {
        return Err(format!("repository {repo:?} is not a plain git URL or path"));
    }
    if !allowlisted(allowlist, repo) {
        return Err(format!("repository {repo} is not on the worker's --job-repo-allowlist"));
    }
    if !valid_tag(tag) {
        return Err(format!("{tag:?} is not a valid tag name"));
    }
    Ok(())
}

async fn git(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["-c", "protocol.ext.allow=never", "-c", "advice.detachedHead=false", "-c", "core.symlinks=true"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, c.output()).await {
        Err(_) => return Err(format!("git {} did not finish within {}s", args[0], timeout.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run git: {e}")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first: String = stderr.lines().last().unwrap_or_default().chars().take(300).collect();
        return Err(format!("git {}: {first}", args[0]));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fetches `tag` of `repo` shallow into the empty directory `dest` and checks it out;
/// returns the commit id.
pub async fn fetch_tag(repo: &str, tag: &str, dest: &Path, timeout: Duration) -> Result<String, String> {
    git(dest, &["init", "-q"], timeout).await?;
    let refspec = format!("+refs/tags/{tag}:refs/tags/{tag}");
    git(dest, &["fetch", "-q", "--depth", "1", "--no-tags", "--", repo, &refspec], timeout).await.map_err(|e| {
        format!("tag {tag} of {repo} could not be fetched (only tags are accepted, never branches): {e}")
    })?;
    git(dest, &["checkout", "-q", "--detach", &format!("refs/tags/{tag}")], timeout).await?;
    let commit = git(dest, &["rev-parse", "HEAD"], timeout).await?;
    std::fs::remove_dir_all(dest.join(".git")).map_err(|e| format!("removing .git: {e}"))?;
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_plain_names() {
        for ok in ["v1.2.3", "release/2024-01", "1.0+build"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", "-upload-pack=x", "a..b", "v1 2", "x@{1}", "/v1", "v1.lock"] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn repositories_must_be_allowlisted_and_plain() {
        let list = vec!["https://git.example.org/ops/jobs.git".to_string()];
        assert!(check("https://git.example.org/ops/jobs.git", "v1", &list).is_ok());
        assert!(check("https://git.example.org/other.git", "v1", &list).unwrap_err().contains("allowlist"));
        assert!(check("ext::sh -c touch% /tmp/x", "v1", &["*".into()]).is_err());
        assert!(check("--upload-pack=x", "v1", &["*".into()]).is_err());
    }
}
