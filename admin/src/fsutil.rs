//! Crash-safe file writes: a reader (or the admin after a crash) sees either the old
//! file or the new one, never a torn mix.
//!
//! The recipe: write a temp file in the target's directory (same filesystem, so the
//! rename is atomic), fsync it, rename it over the target, fsync the directory so the
//! rename itself survives a power cut. Temp files are named
//! `.<name>.plughost-tmp-<pid>-<n>`; [`is_temp_file`] recognises them so a loader can
//! clean up after a crash that happened mid-write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The marker in every temp file name this module creates.
const TEMP_MARKER: &str = ".plughost-tmp-";

/// Writes `bytes` to `path` atomically, creating parent directories as needed. An existing
/// file's permissions are kept; a new file gets the process's default mode.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_inner(path, bytes, false)
}

/// Like [`write_atomic`], but the file is readable and writable by its owner only (0600
/// on Unix), whatever it was before: for files that hold secrets, such as saved configs
/// with sensitive values.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_inner(path, bytes, true)
}

/// Whether `file_name` is a temp file left behind by an interrupted atomic write.
pub fn is_temp_file(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(TEMP_MARKER)
}

fn write_atomic_inner(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} has no file name", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}{TEMP_MARKER}{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let result = (|| {
        let mut file = create_new(&tmp, private)?;
        if !private && let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        // Best effort: after a successful rename the temp file is gone already.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn create_new(path: &Path, private: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

/// Makes a rename in `dir` durable. Directories cannot be opened for syncing on every
/// platform; where they cannot, the rename is as durable as the OS makes it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::TempDir;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_creates_parent_dirs_and_writes_the_bytes() {
        let tmp = TempDir::new("create");
        let path = tmp.0.join("a/b/c/file.bin");
        write_atomic(&path, b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
    }

    #[test]
    fn write_atomic_replaces_an_existing_file_and_leaves_no_temp_file() {
        let tmp = TempDir::new("replace");
        let path = tmp.0.join("file.json");
        write_atomic(&path, b"old contents that are longer").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names_in(&tmp.0), vec!["file.json".to_string()]);
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file_and_the_old_file_intact() {
        let tmp = TempDir::new("fail");
        let path = tmp.0.join("target");
        // A directory in the way makes the rename fail after the temp file was written.
        fs::create_dir_all(path.join("occupied")).unwrap();
        assert!(write_atomic(&path, b"x").is_err());
        assert_eq!(names_in(&tmp.0), vec!["target".to_string()]);
        assert!(path.join("occupied").is_dir());
    }

    #[test]
    fn a_path_without_a_file_name_is_rejected() {
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn temp_file_names_are_recognised() {
        assert!(is_temp_file(".config.pb.plughost-tmp-12-0"));
        assert!(!is_temp_file("config.pb"));
        assert!(!is_temp_file(".hidden"));
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new("private");
        let path = tmp.0.join("secret.pb");
        write_atomic(&path, b"public first").unwrap();
        write_atomic_private(&path, b"secret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_keeps_the_permissions_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new("perms");
        let path = tmp.0.join("file");
        write_atomic(&path, b"one").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"two").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}
