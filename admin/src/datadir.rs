//! The data dir belongs to one admin at a time: an exclusive lock on
//! `<data>/plugin/admin.lock`, held until the process exits. The operating system drops
//! the lock when its holder dies, however it dies, so a stale lock from a killed admin
//! never blocks a restart; the file only names the holder's pid for the error message.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How long a start waits for a data dir's lock before it says who holds it, and how
/// often it tries meanwhile.
const LOCK_WAIT: Duration = Duration::from_secs(1);
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// Held while the admin runs; dropping it releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data dir {} is in use by another admin (pid {pid}); stop that admin or use another --data-dir", data_dir.display())]
    Held { data_dir: PathBuf, pid: String },
    #[error("cannot create {} (--data-dir): {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot open the lock file {} (--data-dir): {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Takes the data dir's lock, or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let dir = data_dir.join("plugin");
        let path = dir.join("admin.lock");
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(|source| LockError::Create { path: dir.clone(), source })?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // A holder that just let go can still hold the lock for a moment: a process forked
        // by it (to run a worker, a script, a test's child) shares the lock until that
        // process executes its program. So a refusal is only final after LOCK_WAIT.
        let deadline = Instant::now() + LOCK_WAIT;
        let mut locked = file.try_lock();
        while matches!(locked, Err(TryLockError::WouldBlock)) && Instant::now() < deadline {
            std::thread::sleep(LOCK_RETRY);
            locked = file.try_lock();
        }
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().chars().take(20).collect::<String>();
                let pid = if pid.is_empty() { "unknown".to_string() } else { pid };
                return Err(LockError::Held { data_dir: data_dir.to_path_buf(), pid });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = TempDir::new("datadir-lock");
        let first = DataDirLock::acquire(&dir.0).unwrap();
        let err = DataDirLock::acquire(&dir.0).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&dir.0.display().to_string()), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(first);
        DataDirLock::acquire(&dir.0).expect("free again once the holder let go");
    }
}
