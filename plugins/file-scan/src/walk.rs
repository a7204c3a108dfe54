//! A depth-first walk over one configured path that yields regular files with their
//! metadata. Symlinks below the root are never followed (no loops, no escaping the
//! tree; a symlinked root is followed, since the operator named it), unreadable
//! directories become errors in the stream instead of ending it, and entries come in
//! name order so scans are reproducible.

use std::{
    fs::{self, Metadata},
    io,
    path::{Path, PathBuf},
};

/// How far a walk goes.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Descend into subdirectories.
    pub recursive: bool,
    /// Directory levels below the root that are still read (0: the root only).
    pub max_depth: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions { recursive: true, max_depth: 32 }
    }
}

/// A regular file found by the walk.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    /// The path below the root, `/`-separated (the file name when the root is a file).
    pub relative: String,
    pub name: String,
    pub metadata: Metadata,
}

/// Something the walk could not read; the walk goes on without it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WalkError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Iterates over the regular files under `root` (or `root` itself when it is a file).
pub struct Walker {
    options: WalkOptions,
    /// Paths still to visit, with their depth and relative path; popped from the end.
    stack: Vec<(PathBuf, usize, String)>,
}

impl Walker {
    pub fn new(root: impl Into<PathBuf>, options: WalkOptions) -> Walker {
        Walker { options, stack: vec![(root.into(), 0, String::new())] }
    }

    fn children(&mut self, dir: &Path, depth: usize, relative: &str) -> Result<(), WalkError> {
        let error = |source| WalkError { path: dir.to_path_buf(), source };
        let mut entries = fs::read_dir(dir)
            .map_err(error)?
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect::<Vec<_>>();
        // Reverse name order on the stack pops in name order.
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        for (name, path) in entries {
            let rel = if relative.is_empty() { name } else { format!("{relative}/{name}") };
            self.stack.push((path, depth + 1, rel));
        }
        Ok(())
    }
}

impl Iterator for Walker {
    type Item = Result<Found, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some((path, depth, relative)) = self.stack.pop() {
            // The root is what the operator named, so a symlink there is followed;
            // below it, never.
            let metadata = match if depth == 0 { fs::metadata(&path) } else { fs::symlink_metadata(&path) } {
                Ok(m) => m,
                // Vanished between listing and looking: not worth reporting.
                Err(e) if e.kind() == io::ErrorKind::NotFound && depth > 0 => continue,
                Err(source) => return Some(Err(WalkError { path, source })),
            };
            let kind = metadata.file_type();
            if kind.is_file() {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let relative = if relative.is_empty() { name.clone() } else { relative };
                return Some(Ok(Found { path, relative, name, metadata }));
            }
            let descend = depth == 0 || (self.options.recursive && depth <= self.options.max_depth);
            if kind.is_dir()
                && descend
                && let Err(e) = self.children(&path, depth, &relative)
            {
                return Some(Err(e));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let root = std::env::temp_dir().join(format!("file-scan-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a/deep")).unwrap();
        fs::write(root.join("top.txt"), "1").unwrap();
        fs::write(root.join("a/mid.txt"), "2").unwrap();
        fs::write(root.join("a/deep/low.txt"), "3").unwrap();
        std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
        root
    }

    fn relatives(root: &Path, options: WalkOptions) -> Vec<String> {
        Walker::new(root, options).map(|f| f.unwrap().relative).collect()
    }

    #[test]
    fn the_walk_yields_files_in_order_and_skips_symlinks() {
        let root = tree();
        assert_eq!(relatives(&root, WalkOptions::default()), ["a/deep/low.txt", "a/mid.txt", "top.txt"]);
        assert_eq!(relatives(&root, WalkOptions { recursive: false, max_depth: 9 }), ["top.txt"]);
        assert_eq!(relatives(&root, WalkOptions { recursive: true, max_depth: 1 }), ["a/mid.txt", "top.txt"]);
        assert_eq!(relatives(&root.join("top.txt"), WalkOptions::default()), ["top.txt"]);
        assert_eq!(relatives(&root.join("a/loop"), WalkOptions::default()).len(), 3, "a symlinked root is followed");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_root_is_an_error_in_the_stream() {
        let mut w = Walker::new("/nonexistent/plughost/walk", WalkOptions::default());
        assert!(w.next().unwrap().is_err());
        assert!(w.next().is_none());
    }
}
