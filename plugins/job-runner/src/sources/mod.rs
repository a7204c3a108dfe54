//! Sources, pinned and checked: a definition's code comes from a git tag
//! ([`git`]), an HTTPS tarball whose SHA-256 is given ([`download`]), or a tarball
//! below `--job-tarball-dir`; tarballs are unpacked by [`unpack`]. Each source is
//! fetched once into `<dir>/sources/<key>` (the key is the tarball's checksum, or the
//! repository and tag), built in a scratch directory and renamed into place, so a
//! half-fetched source is never used.

pub mod download;
pub mod git;
pub mod unpack;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use ring::digest;

use crate::{definition::SourceSpec, policy::RunnerPolicy};

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` is a SHA-256 in hex.
pub fn valid_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(hash.finish().as_ref()))
}

/// A fetched source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The unpacked tree (read-only for the code).
    pub root: PathBuf,
    /// The working directory: the definition's `path` inside `root`.
    pub work_dir: PathBuf,
    /// What exactly was fetched: the commit of a tag, or the tarball's SHA-256.
    pub resolved: String,
}

/// The unpacked size allowed for a tarball of at most `max_bytes`.
pub fn unpacked_limit(max_bytes: u64) -> u64 {
    max_bytes.saturating_mul(8)
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

fn scratch_dir(sources: &Path) -> std::io::Result<PathBuf> {
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let dir = sources.join(format!(".partial-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Moves a finished `scratch/tree` to `final_dir`; another fetch that finished first wins.
fn settle(scratch: &Path, final_dir: &Path) -> Result<(), String> {
    let result = match std::fs::rename(scratch.join("tree"), final_dir) {
        Ok(()) => Ok(()),
        Err(_) if final_dir.is_dir() => Ok(()),
        Err(e) => Err(format!("{}: {e}", final_dir.display())),
    };
    let _ = std::fs::remove_dir_all(scratch);
    result
}

/// Fetches (or finds in the cache) the source of a definition.
pub async fn fetch(spec: &SourceSpec, policy: &RunnerPolicy) -> Result<Fetched, String> {
    let sources = policy.sources_dir();
    std::fs::create_dir_all(&sources).map_err(|e| format!("{}: {e}", sources.display()))?;
    let (root, resolved) = match spec {
        SourceSpec::GitTag { repo, tag, .. } => {
            git::check(repo, tag, &policy.repo_allowlist)?;
            let key = hex(digest::digest(&digest::SHA256, format!("{repo}\0{tag}").as_bytes()).as_ref());
            let final_dir = sources.join(format!("git-{}", &key[..32]));
            let commit_file = sources.join(format!("git-{}.commit", &key[..32]));
            if final_dir.is_dir()
                && let Ok(commit) = std::fs::read_to_string(&commit_file)
            {
                (final_dir, commit.trim().to_string())
            } else {
                let scratch = scratch_dir(&sources).map_err(|e| format!("{}: {e}", sources.display()))?;
                let tree = scratch.join("tree");
                std::fs::create_dir(&tree).map_err(|e| e.to_string())?;
                let commit = match git::fetch_tag(repo, tag, &tree, policy.download_timeout).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&scratch);
                        return Err(e);
                    }
                };
                settle(&scratch, &final_dir)?;
                std::fs::write(&commit_file, &commit).map_err(|e| e.to_string())?;
                (final_dir, commit)
            }
        }
        SourceSpec::TarballUrl { url, sha256, .. } => {
            let want = sha256.to_lowercase();
            download::check_url(url, &policy.tarball_allowlist)?;
            let final_dir = sources.join(format!("sha256-{want}"));
            if !final_dir.is_dir() {
                let scratch = scratch_dir(&sources).map_err(|e| format!("{}: {e}", sources.display()))?;
                let archive = scratch.join("archive");
                let dl = download::DownloadPolicy {
                    allowlist: policy.tarball_allowlist.clone(),
                    max_bytes: policy.tarball_max_bytes,
                    timeout: policy.download_timeout,
                    extra_ca_file: policy.extra_ca_file.clone(),
                };
                let got = download::download(url, &archive, &dl).await;
                let checked = got.and_then(|got| {
                    if got.sha256 == want {
                        Ok(())
                    } else {
                        Err(format!(
                            "checksum mismatch for {url}: expected sha256 {want}, got {}; nothing was unpacked",
                            got.sha256
                        ))
                    }
                });
                if let Err(e) = checked {
                    let _ = std::fs::remove_dir_all(&scratch);
                    return Err(e);
                }
                unpack_into(&scratch, archive, policy.tarball_max_bytes, &final_dir).await?;
            }
            (final_dir, format!("sha256:{want}"))
        }
        SourceSpec::TarballPath { file, sha256, .. } => {
            let dir = policy
                .tarball_dir
                .as_ref()
                .ok_or("tarball_path sources are off on this worker: start it with --job-tarball-dir")?;
            let base = dir.canonicalize().map_err(|e| format!("--job-tarball-dir {}: {e}", dir.display()))?;
            let path = base.join(file).canonicalize().map_err(|e| format!("tarball {file}: {e}"))?;
            if !path.starts_with(&base) {
                return Err(format!("tarball {file} is outside --job-tarball-dir {}", dir.display()));
            }
            let meta = std::fs::metadata(&path).map_err(|e| format!("tarball {file}: {e}"))?;
            if !meta.is_file() {
                return Err(format!("tarball {file} is not a file"));
            }
            if meta.len() > policy.tarball_max_bytes {
                return Err(format!(
                    "tarball {file} is {} bytes, over the limit of {} (--job-tarball-max-bytes)",
                    meta.len(),
                    policy.tarball_max_bytes
                ));
            }
            let scratch = scratch_dir(&sources).map_err(|e| format!("{}: {e}", sources.display()))?;
            let copy = scratch.join("archive");
            // A copy, so the checksum checked is the checksum of what is unpacked.
            std::fs::copy(&path, &copy).map_err(|e| format!("tarball {file}: {e}"))?;
            let got = sha256_file(&copy).map_err(|e| format!("tarball {file}: {e}"))?;
            if let Some(want) = sha256.as_ref().map(|s| s.to_lowercase())
                && want != got
            {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(format!(
                    "checksum mismatch for {file}: expected sha256 {want}, got {got}; nothing was unpacked"
                ));
            }
            let final_dir = sources.join(format!("sha256-{got}"));
            if final_dir.is_dir() {
                let _ = std::fs::remove_dir_all(&scratch);
            } else {
                unpack_into(&scratch, copy, policy.tarball_max_bytes, &final_dir).await?;
            }
            (final_dir, format!("sha256:{got}"))
        }
    };
    let work_dir = root.join(spec.path());
    let inside =
        work_dir.canonicalize().ok().zip(root.canonicalize().ok()).is_some_and(|(w, r)| w.starts_with(r) && w.is_dir());
    if !inside {
        return Err(format!("path {:?} is not a directory inside the source", spec.path()));
    }
    Ok(Fetched { root, work_dir, resolved })
}

async fn unpack_into(scratch: &Path, archive: PathBuf, max_bytes: u64, final_dir: &Path) -> Result<(), String> {
    let tree = scratch.join("tree");
    let limit = unpacked_limit(max_bytes);
    let unpacked = {
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&tree)?;
            unpack::unpack(&archive, &tree, limit)
        })
        .await
        .map_err(|e| format!("unpacking: {e}"))?
    };
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(scratch);
        return Err(format!("tarball refused: {e}"));
    }
    settle(scratch, final_dir)
}
