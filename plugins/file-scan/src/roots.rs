//! A scan over every configured root: the walk the file plugins share. It visits each
//! root with a [`Walker`], stops when asked to, keeps unreadable entries as problems
//! instead of failing, and hands out each file's canonical path once, so a file reached
//! through two roots is proposed once.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use crate::walk::{Found, WalkOptions, Walker};

pub struct Roots<'a> {
    roots: std::slice::Iter<'a, PathBuf>,
    options: WalkOptions,
    current: Option<Walker>,
    seen: HashSet<PathBuf>,
    /// Entries that could not be read, and anything else the caller reports, in order.
    pub problems: Vec<String>,
    /// True when the scan ended because `stop` said so.
    pub canceled: bool,
}

impl<'a> Roots<'a> {
    pub fn new(roots: &'a [PathBuf], options: WalkOptions) -> Self {
        Roots {
            roots: roots.iter(),
            options,
            current: None,
            seen: HashSet::new(),
            problems: Vec::new(),
            canceled: false,
        }
    }

    /// The next regular file, or `None` when every root is done or `stop()` is true.
    pub fn next_file(&mut self, stop: impl Fn() -> bool) -> Option<Found> {
        loop {
            if stop() {
                self.canceled = true;
                return None;
            }
            let walker = match &mut self.current {
                Some(w) => w,
                None => self.current.insert(Walker::new(self.roots.next()?, self.options.clone())),
            };
            match walker.next() {
                Some(Ok(found)) => return Some(found),
                Some(Err(e)) => self.problems.push(e.to_string()),
                None => self.current = None,
            }
        }
    }

    /// The file's canonical path the first time it is seen; `None` (a problem is
    /// recorded when it cannot be resolved) for a repeat or an unresolvable path.
    pub fn canonical_once(&mut self, path: &Path) -> Option<PathBuf> {
        match std::fs::canonicalize(path) {
            Ok(p) => self.seen.insert(p.clone()).then_some(p),
            Err(e) => {
                self.problem(format!("{}: {e}", path.display()));
                None
            }
        }
    }

    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_under_two_roots_comes_out_once_and_missing_roots_are_problems() {
        let dir = std::env::temp_dir().join(format!("plughost-roots-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.txt"), b"a").unwrap();
        let roots = vec![dir.clone(), dir.join("sub"), dir.join("missing")];
        let mut scan = Roots::new(&roots, WalkOptions::default());
        let mut once = Vec::new();
        while let Some(found) = scan.next_file(|| false) {
            if let Some(p) = scan.canonical_once(&found.path) {
                once.push(p);
            }
        }
        assert_eq!(once.len(), 1);
        assert_eq!(scan.problems.len(), 1, "{:?}", scan.problems);
        assert!(!scan.canceled);
        let mut stopped = Roots::new(&roots, WalkOptions::default());
        assert!(stopped.next_file(|| true).is_none());
        assert!(stopped.canceled);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
