//! Archiving one file safely:
//!
//! 1. note the original's identity (device, inode, size, modification time);
//! 2. compress it into a hidden partial file beside it (`.<name>.<ext>.part`);
//! 3. verify: decompress the partial file and compare it byte for byte with the
//!    original, read again;
//! 4. check the original's identity again: if it changed, stop and leave it alone;
//! 5. give the archive the original's permissions and modification time, move it to
//!    `<name>.<ext>` (never replacing an existing file), sync the directory;
//! 6. remove the original.
//!
//! A guard removes the partial file on every way out before step 5, including a cancel
//! and a panic, so a run that does not finish leaves no partial archive behind.

use std::{
    fs::{self, File, Metadata},
    io::{self, BufReader, Read},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use worker_sdk::CancellationToken;

use crate::format::Format;

/// Bytes read per step; a cancel is noticed within one step.
const CHUNK: usize = 1024 * 1024;
/// Progress reports at most this often (the last one of a phase always goes out).
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Which part of the work a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Compressing,
    Verifying,
}

/// Bytes done of the original's size, in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

impl Progress {
    /// Overall percent: compressing is the first 60, verifying the next 38; the last
    /// two are the rename and the removal.
    pub fn percent(&self) -> f64 {
        let part = if self.total == 0 { 1.0 } else { self.done as f64 / self.total as f64 };
        match self.phase {
            Phase::Compressing => 60.0 * part,
            Phase::Verifying => 60.0 + 38.0 * part,
        }
    }
}

/// A finished archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub archive: PathBuf,
    pub original_bytes: u64,
    pub archive_bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} already exists; the original was left alone", .0.display())]
    ArchiveExists(PathBuf),
    #[error("{} changed while it was being archived; it was left alone", .0.display())]
    Changed(PathBuf),
    #[error("the archive of {} did not read back the same: {reason}; the original was left alone", path.display())]
    Verify { path: PathBuf, reason: String },
    #[error("archiving canceled; the original was left alone and no partial archive remains")]
    Canceled,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), source }
}

/// The identity of a file's content, as far as metadata can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub modified: Option<SystemTime>,
    /// Status change time: catches writes that put the modification time back.
    pub ctime: (i64, i64),
}

impl Identity {
    pub fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Reads the identity of `path` without following a symlink.
    pub fn read(path: &Path) -> Result<Identity, ArchiveError> {
        fs::symlink_metadata(path).map(|m| Identity::of(&m)).map_err(io_error(path))
    }
}

/// Where the archive of `original` goes.
pub fn archive_path(original: &Path, format: Format) -> PathBuf {
    let mut name = original.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(format.extension());
    original.with_file_name(name)
}

/// Where the archive is written before it is verified.
pub fn partial_path(original: &Path, format: Format) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(original.file_name().unwrap_or_default());
    name.push(".");
    name.push(format.extension());
    name.push(".part");
    original.with_file_name(name)
}

/// Whether `name` is one of this plugin's partial files.
pub fn is_partial_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".part")
}

/// Removes the partial file when dropped, unless it was kept.
struct PartialFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Archives `original` in `format` (see the module docs for the steps). `on_progress`
/// gets byte counts a few times a second.
pub fn archive_file(
    original: &Path,
    format: Format,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(Progress),
) -> Result<Archived, ArchiveError> {
    let started = Instant::now();
    let metadata = fs::symlink_metadata(original).map_err(io_error(original))?;
    if !metadata.file_type().is_file() {
        return Err(ArchiveError::NotAFile(original.to_path_buf()));
    }
    let identity = Identity::of(&metadata);
    let target = archive_path(original, format);
    if fs::symlink_metadata(&target).is_ok() {
        return Err(ArchiveError::ArchiveExists(target));
    }

    let partial = PartialFile { path: partial_path(original, format), keep: false };
    // The handle we created stays the only way we touch the partial's metadata, so the
    // name being swapped for a symlink meanwhile cannot make us chmod another file.
    let file = compress(original, &partial.path, format, identity.len, cancel, &mut on_progress)?;
    verify(original, &partial.path, format, identity.len, cancel, &mut on_progress)?;
    if Identity::read(original)? != identity {
        return Err(ArchiveError::Changed(original.to_path_buf()));
    }

    file.set_permissions(metadata.permissions()).map_err(io_error(&partial.path))?;
    if let Some(modified) = identity.modified {
        file.set_modified(modified).map_err(io_error(&partial.path))?;
    }
    let ours = file.metadata().map_err(io_error(&partial.path))?;
    let archive_bytes = ours.len();
    drop(file);
    // The partial's name must still be the file we wrote before it becomes the archive.
    let named = fs::symlink_metadata(&partial.path).map_err(io_error(&partial.path))?;
    {
        use std::os::unix::fs::MetadataExt;
        if !named.file_type().is_file() || (named.dev(), named.ino()) != (ours.dev(), ours.ino()) {
            return Err(ArchiveError::Changed(partial.path.clone()));
        }
    }
    place(&partial.path, &target)?;
    let mut partial = partial;
    partial.keep = true;
    sync_dir(original);

    // The last look before the original goes: it must still be the file we archived.
    if Identity::read(original)? != identity {
        let _ = fs::remove_file(&target);
        return Err(ArchiveError::Changed(original.to_path_buf()));
    }
    fs::remove_file(original).map_err(io_error(original))?;
    sync_dir(original);
    Ok(Archived { archive: target, original_bytes: identity.len, archive_bytes, elapsed: started.elapsed() })
}

/// Moves the verified partial file to `target` without replacing anything there: a
/// hard link fails if `target` exists, and the partial name is then removed.
fn place(partial: &Path, target: &Path) -> Result<(), ArchiveError> {
    match fs::hard_link(partial, target) {
        Ok(()) => fs::remove_file(partial).map_err(io_error(partial)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ArchiveError::ArchiveExists(target.to_path_buf())),
        // Filesystems without hard links: check, then rename.
        Err(_) if fs::symlink_metadata(target).is_ok() => Err(ArchiveError::ArchiveExists(target.to_path_buf())),
        Err(_) => fs::rename(partial, target).map_err(io_error(target)),
    }
}

fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Reports progress at most every [`REPORT_EVERY`], and always at the end of a phase.
struct Reporter<'a, F: FnMut(Progress)> {
    on_progress: &'a mut F,
    phase: Phase,
    total: u64,
    last: Option<Instant>,
}

impl<F: FnMut(Progress)> Reporter<'_, F> {
    fn report(&mut self, done: u64) {
        let due = self.last.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if due || done >= self.total {
            self.last = Some(Instant::now());
            (self.on_progress)(Progress { phase: self.phase, done, total: self.total });
        }
    }
}

fn compress(
    original: &Path,
    partial: &Path,
    format: Format,
    total: u64,
    cancel: &CancellationToken,
    on_progress: &mut impl FnMut(Progress),
) -> Result<File, ArchiveError> {
    let mut input = File::open(original).map_err(io_error(original))?;
    // A stale partial is unlinked (which never follows a symlink), and the new one is
    // created exclusively (O_EXCL): a symlink planted at the partial name by someone who
    // can write in this directory makes the open fail instead of redirecting the write.
    match fs::remove_file(partial) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ArchiveError::Io { path: partial.to_path_buf(), source: e }),
    }
    let out = File::options().write(true).create_new(true).open(partial).map_err(io_error(partial))?;
    let mut encoder = format.encoder(io::BufWriter::new(out));
    let mut reporter = Reporter { on_progress, phase: Phase::Compressing, total, last: None };
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(ArchiveError::Canceled);
        }
        let n = read_full(&mut input, &mut buf).map_err(io_error(original))?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buf[..n]).map_err(io_error(partial))?;
        done += n as u64;
        reporter.report(done);
    }
    if done != total {
        return Err(ArchiveError::Changed(original.to_path_buf()));
    }
    let out = encoder.finish().map_err(io_error(partial))?;
    let file =
        out.into_inner().map_err(|e| ArchiveError::Io { path: partial.to_path_buf(), source: e.into_error() })?;
    file.sync_all().map_err(io_error(partial))?;
    reporter.report(done);
    Ok(file)
}

fn verify(
    original: &Path,
    partial: &Path,
    format: Format,
    total: u64,
    cancel: &CancellationToken,
    on_progress: &mut impl FnMut(Progress),
) -> Result<(), ArchiveError> {
    let archive = File::open(partial).map_err(io_error(partial))?;
    let mut decoded = format.decoder(BufReader::new(archive));
    let mut source = File::open(original).map_err(io_error(original))?;
    let mut reporter = Reporter { on_progress, phase: Phase::Verifying, total, last: None };
    let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut done = 0u64;
    let mismatch = |reason: String| ArchiveError::Verify { path: original.to_path_buf(), reason };
    loop {
        if cancel.is_cancelled() {
            return Err(ArchiveError::Canceled);
        }
        let n = read_full(&mut decoded, &mut a).map_err(|e| mismatch(format!("cannot decompress: {e}")))?;
        let m = read_full(&mut source, &mut b).map_err(io_error(original))?;
        if n != m || a[..n] != b[..m] {
            return Err(mismatch(format!("content differs after byte {done}")));
        }
        if n == 0 {
            break;
        }
        done += n as u64;
        reporter.report(done);
    }
    if done != total {
        return Err(ArchiveError::Changed(original.to_path_buf()));
    }
    reporter.report(done);
    Ok(())
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_and_partial_names_sit_beside_the_original() {
        let p = Path::new("/var/log/app.log");
        assert_eq!(archive_path(p, Format::Zstd), Path::new("/var/log/app.log.zst"));
        assert_eq!(partial_path(p, Format::Gzip { level: 6 }), Path::new("/var/log/.app.log.gz.part"));
        assert!(is_partial_name(".app.log.gz.part"));
        assert!(!is_partial_name("app.log"));
    }

    #[test]
    fn progress_maps_phases_onto_one_bar() {
        let p = |phase, done| Progress { phase, done, total: 200 }.percent();
        assert_eq!(p(Phase::Compressing, 100), 30.0);
        assert_eq!(p(Phase::Verifying, 200), 98.0);
        assert_eq!(Progress { phase: Phase::Verifying, done: 0, total: 0 }.percent(), 98.0);
    }
}
