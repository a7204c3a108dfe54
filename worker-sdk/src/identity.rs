//! The worker's identity: a stable worker id kept in `<working_dir>/worker_id` (so a
//! restarted worker is the same worker to the admin) and a fresh instance id per start.

use std::{io::Write, path::Path};

use crate::Error;

const ID_FILE: &str = "worker_id";

/// The configured id, else the one saved in `working_dir`, else a new one saved there.
pub(crate) fn resolve_worker_id(configured: Option<&str>, working_dir: &Path) -> Result<String, Error> {
    if let Some(id) = configured {
        let id = id.trim();
        if id.is_empty() {
            return Err(Error::Config("worker_id is empty".into()));
        }
        return Ok(id.to_string());
    }
    let path = working_dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
    let id = format!("worker-{}", crate::random::hex(8));
    write_atomic(working_dir, ID_FILE, id.as_bytes())?;
    tracing::info!(worker_id = %id, path = %path.display(), "generated a new worker id");
    Ok(id)
}

/// A new id for this process start.
pub(crate) fn new_instance_id() -> String {
    crate::random::hex(12)
}

/// Writes `dir/name` so that readers see the old content or the new, never a part:
/// write a temp file, fsync it, rename it over the target, fsync the directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", crate::random::hex(4)));
    let target = dir.join(name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        // Makes the rename itself durable; not every platform can open a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", target.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_saved_and_read_back() {
        let dir = std::env::temp_dir().join(format!("worker-sdk-identity-{}", crate::random::hex(6)));
        let first = resolve_worker_id(None, &dir).unwrap();
        let second = resolve_worker_id(None, &dir).unwrap();
        assert_eq!(first, second);
        assert!(first.starts_with("worker-"));
        assert_eq!(resolve_worker_id(Some("mine"), &dir).unwrap(), "mine");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_configured_id_is_a_config_error() {
        assert!(matches!(resolve_worker_id(Some(" "), Path::new("/nonexistent")), Err(Error::Config(_))));
    }
}
