//! Unpacking a tarball (`.tar`, or gzip-compressed) into a fresh directory, entry by
//! entry, refusing anything that could reach outside it: absolute paths, `..`,
//! symbolic links whose target leaves the tree, hard links to anything but a file
//! already unpacked (copied, never linked), device files and FIFOs. The `tar` crate
//! parses the headers (GNU long names, pax); this module decides what is written.
//! Entries, total bytes and file modes are bounded.

use std::{
    fs,
    io::{self, Read},
    path::{Component, Path, PathBuf},
};

use tar::EntryType;

/// The most entries one archive may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("archive entry {0:?} has an absolute path")]
    Absolute(String),
    #[error("archive entry {0:?} leaves the tree with '..'")]
    Parent(String),
    #[error("archive entry {entry:?} is a link to {target:?}, outside the tree")]
    EscapingLink { entry: String, target: String },
    #[error("archive entry {0:?} is a device file or a FIFO")]
    Special(String),
    #[error("archive entry {0:?} has an unsupported type")]
    Unsupported(String),
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("the archive is damaged: {0}")]
    Io(#[from] io::Error),
}

/// Unpacks `archive` (gzip-compressed when it starts with the gzip magic) into `dest`,
/// which must exist and be empty. At most `max_bytes` of file contents are written.
pub fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), UnpackError> {
    let mut file = fs::File::open(archive)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = fs::File::open(archive)?;
    let reader: Box<dyn Read> =
        if n == 2 && magic == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    unpack_from(reader, dest, max_bytes)
}

/// The entry's path inside the tree, checked: relative, no `..`, `.` segments dropped.
fn inside(raw: &Path, shown: &str) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnpackError::Parent(shown.to_string())),
            Component::RootDir | Component::Prefix(_) => return Err(UnpackError::Absolute(shown.to_string())),
        }
    }
    Ok(out)
}

/// Whether a link at `entry` (a path inside the tree) pointing to `target` stays inside
/// it, resolving `..` lexically from the link's directory.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> =
        entry.parent().map(|p| p.components().filter_map(normal).collect()).unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn normal(c: Component<'_>) -> Option<&std::ffi::OsStr> {
    match c {
        Component::Normal(part) => Some(part),
        _ => None,
    }
}

/// Removes whatever is at `path` unless it is a directory, so that a write never goes
/// through a link an earlier entry made.
fn clear(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` below `dest`, refusing to pass through a symbolic link: every ancestor
/// of an entry must be a real directory made by this unpacking.
fn make_dirs(dest: &Path, rel: &Path) -> Result<(), UnpackError> {
    let mut at = dest.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::EscapingLink {
                    entry: rel.display().to_string(),
                    target: "a path through a link or a file".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub fn unpack_from(reader: impl Read, dest: &Path, max_bytes: u64) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut written: u64 = 0;
    for (count, entry) in archive.entries()?.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(UnpackError::TooManyEntries);
        }
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let shown = raw.display().to_string();
        let rel = inside(&raw, &shown)?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(UnpackError::Unsupported(shown));
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let target = dest.join(&rel);
        match kind {
            EntryType::Directory => make_dirs(dest, &rel)?,
            EntryType::Regular | EntryType::Continuous => {
                make_dirs(dest, parent)?;
                clear(&target)?;
                let size = entry.header().size()?;
                written = written.saturating_add(size);
                if written > max_bytes {
                    return Err(UnpackError::TooLarge(max_bytes));
                }
                let mut out = fs::File::create(&target)?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut out)?;
                if copied != size {
                    return Err(UnpackError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "a file is cut short")));
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(
                    &target,
                    fs::Permissions::from_mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 }),
                )?;
            }
            EntryType::Symlink => {
                let link = entry.link_name()?.ok_or_else(|| UnpackError::Unsupported(shown.clone()))?.into_owned();
                if !link_stays_inside(&rel, &link) {
                    return Err(UnpackError::EscapingLink { entry: shown, target: link.display().to_string() });
                }
                make_dirs(dest, parent)?;
                clear(&target)?;
                std::os::unix::fs::symlink(&link, &target)?;
            }
            EntryType::Link => {
                let link = entry.link_name()?.ok_or_else(|| UnpackError::Unsupported(shown.clone()))?.into_owned();
                let source_rel = inside(&link, &link.display().to_string()).map_err(|_| UnpackError::EscapingLink {
                    entry: shown.clone(),
                    target: link.display().to_string(),
                })?;
                let source = dest.join(&source_rel);
                // Only a regular file unpacked before, reached without a link: copied.
                let ok = fs::symlink_metadata(&source).is_ok_and(|m| m.is_file())
                    && source.canonicalize().is_ok_and(|c| dest.canonicalize().is_ok_and(|d| c.starts_with(d)));
                if !ok {
                    return Err(UnpackError::EscapingLink { entry: shown, target: link.display().to_string() });
                }
                make_dirs(dest, parent)?;
                clear(&target)?;
                let size = fs::metadata(&source)?.len();
                written = written.saturating_add(size);
                if written > max_bytes {
                    return Err(UnpackError::TooLarge(max_bytes));
                }
                fs::copy(&source, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => return Err(UnpackError::Special(shown)),
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            _ => return Err(UnpackError::Unsupported(shown)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_judged_from_their_own_directory() {
        assert!(link_stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a/link"), Path::new("./x/../y")));
        assert!(!link_stays_inside(Path::new("a/link"), Path::new("../../etc/passwd")));
        assert!(!link_stays_inside(Path::new("link"), Path::new("..")));
        assert!(!link_stays_inside(Path::new("link"), Path::new("/etc/passwd")));
    }

    #[test]
    fn paths_with_parents_or_roots_are_refused() {
        assert!(matches!(inside(Path::new("../x"), "../x"), Err(UnpackError::Parent(_))));
        assert!(matches!(inside(Path::new("a/../../x"), ""), Err(UnpackError::Parent(_))));
        assert!(matches!(inside(Path::new("/etc/x"), ""), Err(UnpackError::Absolute(_))));
        assert_eq!(inside(Path::new("./a/./b"), "").unwrap(), PathBuf::from("a/b"));
    }
}
