//! Artifacts: `stdout.log`, `stderr.log`, `result.json` and the files the code wrote
//! to `$PLUGHOST_ARTIFACTS`, capped in count and total size, sent to the admin as
//! output values of the job's result named `plughost.artifact/<name>` (bytes). The
//! admin takes them out of the result and keeps them as files (a Plughost extension of
//! the output values; an admin that does not know it sees large bytes values).
//!
//! Only regular files directly in the directory are taken (never through a link), and
//! only names of 1-128 letters, digits, `.`, `_` and `-` not starting with a dot.

use std::path::Path;

use worker_sdk::{pb, value};

/// The prefix of an artifact's output value name.
pub const PREFIX: &str = "plughost.artifact/";

/// Whether `name` may name an artifact (the admin checks the same).
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Artifacts gathered under the caps.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<(String, Vec<u8>)>,
    /// What was left out and why.
    pub dropped: Vec<String>,
    bytes: u64,
}

impl Collected {
    /// Adds one artifact if it fits in `max_bytes` in all.
    pub fn add(&mut self, name: &str, data: Vec<u8>, max_bytes: u64) {
        let size = data.len() as u64;
        if self.bytes + size > max_bytes {
            self.dropped.push(format!("{name}: {size} bytes would pass the cap of {max_bytes} bytes"));
            return;
        }
        self.bytes += size;
        self.files.push((name.to_string(), data));
    }

    /// The regular files of `dir`, in name order, at most `max_count` of them.
    pub fn add_dir(&mut self, dir: &Path, max_count: usize, max_bytes: u64) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut names: Vec<(String, std::fs::Metadata)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = std::fs::symlink_metadata(e.path()).ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), meta))
            })
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut taken = 0;
        for (name, meta) in names {
            let shown: String = name.chars().take(64).collect();
            if !meta.is_file() {
                self.dropped.push(format!("{shown}: not a regular file"));
            } else if !valid_name(&name) || self.files.iter().any(|(n, _)| *n == name) {
                self.dropped.push(format!("{shown}: the name is not allowed (letters, digits, '.', '_', '-')"));
            } else if taken >= max_count {
                self.dropped.push(format!("{shown}: over the cap of {max_count} files"));
            } else if self.bytes + meta.len() > max_bytes {
                self.dropped.push(format!("{shown}: {} bytes would pass the cap of {max_bytes} bytes", meta.len()));
            } else if let Ok(data) = std::fs::read(dir.join(&name)) {
                taken += 1;
                self.add(&name, data, max_bytes);
            }
        }
    }

    /// The output values that carry the artifacts, and `artifacts_dropped` when any were.
    pub fn into_values(self) -> Vec<(String, pb::ConfigValue)> {
        let mut values: Vec<(String, pb::ConfigValue)> =
            self.files.into_iter().map(|(name, data)| (format!("{PREFIX}{name}"), value::bytes(data))).collect();
        if !self.dropped.is_empty() {
            values.push(("artifacts_dropped".into(), value::string_list(self.dropped)));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        for ok in ["report.csv", "a_b-c.1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "x y", "é", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_caps_hold_and_say_what_they_left_out() {
        let dir = std::env::temp_dir().join(format!("job-runner-artifacts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, size) in [("a.txt", 10), ("b.txt", 10), ("c.txt", 10), ("d.txt", 500)] {
            std::fs::write(dir.join(name), vec![b'x'; size]).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let mut c = Collected::default();
        c.add("stdout.log", b"hello".to_vec(), 100);
        c.add_dir(&dir, 2, 100);
        let names: Vec<&str> = c.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["stdout.log", "a.txt", "b.txt"]);
        assert_eq!(c.dropped.len(), 3, "{:?}", c.dropped);
        assert!(c.dropped.iter().any(|d| d.starts_with("link: not a regular file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
