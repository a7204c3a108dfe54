//! A job's log: its activities oldest first, each labelled with its stream: the lines
//! its script wrote to stdout and stderr (the script and job runners send each as an
//! activity `stdout: <line>` or `stderr: <line>`), what its workers reported, and what
//! the admin noted. Read from the stored activities, so it is the same during the run
//! and after a restart.
//!
//! A log is capped at its newest lines: [`PANEL`] for the job page, [`DOWNLOAD`] for the
//! text download. When older lines are left out the log says so ([`JobLog::truncated`]);
//! the worker's own output cap (the script's `output_limit_bytes`) comes on top, and the
//! runners report it as a line of the log.

use crate::{
    job::{ActivityView, OUTPUT_PREFIXES},
    store::{MAX_PAGE, Store, StoreError},
};

/// Which stream a line of the log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// An activity a worker reported (its executor or detector).
    Worker,
    /// An activity the admin recorded about the job.
    Admin,
}

impl Stream {
    /// `stdout`, `stderr`, `worker` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Worker => "worker",
            Stream::Admin => "admin",
        }
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The activity's id.
    pub id: i64,
    pub at: i64,
    pub stream: Stream,
    /// The worker's stage when it reported the line (empty for the admin's).
    pub stage: String,
    /// The line without its stream prefix.
    pub text: String,
}

impl LogLine {
    /// Labels an activity of the job with its stream, taking the prefix off output lines.
    pub fn from_activity(a: ActivityView) -> LogLine {
        let (stream, text) = if crate::job::is_output(&a) {
            let stream = if a.message.starts_with(OUTPUT_PREFIXES[0]) { Stream::Stdout } else { Stream::Stderr };
            (stream, a.message[OUTPUT_PREFIXES[0].len()..].to_string())
        } else if a.source == "admin" {
            (Stream::Admin, a.message)
        } else {
            (Stream::Worker, a.message)
        };
        LogLine { id: a.id, at: a.created_at, stream, stage: a.stage, text }
    }
}

/// How much of a log is kept: its newest `lines`, and no more than `bytes` of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub lines: usize,
    pub bytes: usize,
}

impl Limits {
    /// "the newest 200 lines, at most 64 KiB".
    pub fn describe(self) -> String {
        let size = if self.bytes.is_multiple_of(1024) {
            format!("{} KiB", self.bytes / 1024)
        } else {
            format!("{} bytes", self.bytes)
        };
        format!("the newest {} lines, at most {size}", self.lines)
    }
}

/// The job page's log panel.
pub const PANEL: Limits = Limits { lines: 200, bytes: 64 * 1024 };

/// The log's text download.
pub const DOWNLOAD: Limits = Limits { lines: 5000, bytes: 512 * 1024 };

/// A job's log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLog {
    pub lines: Vec<LogLine>,
    /// Older lines were left out to keep within `limits`.
    pub truncated: bool,
    pub limits: Limits,
}

impl JobLog {
    /// Reads the newest lines of `job_id`'s log within `limits`, newest first from the
    /// store (by the activities' job index), a page at a time. The caller settles the
    /// store first if it must see what was just recorded.
    pub fn read(store: &Store, job_id: &str, limits: Limits) -> Result<JobLog, StoreError> {
        let mut lines: Vec<LogLine> = Vec::new();
        let mut bytes = 0usize;
        let mut before = None;
        let mut truncated = false;
        'pages: loop {
            // One more than fits, to know whether older lines are left out.
            let want = (limits.lines + 1 - lines.len()).min(MAX_PAGE);
            let page = store.activities(None, Some(job_id), before, want)?;
            let exhausted = page.len() < want;
            before = page.last().map(|a| a.id);
            for a in page {
                let line = LogLine::from_activity(a);
                let size = line.text.len() + 1;
                if lines.len() == limits.lines || bytes + size > limits.bytes {
                    truncated = true;
                    break 'pages;
                }
                bytes += size;
                lines.push(line);
            }
            if exhausted || before.is_none() {
                break;
            }
        }
        lines.reverse();
        Ok(JobLog { lines, truncated, limits })
    }

    /// What the truncation mark says.
    pub fn truncation_note(&self) -> String {
        format!("Earlier lines are left out: this log keeps {}.", self.limits.describe())
    }

    /// The log as plain text: a header, then one line per entry, `<UTC time> <stream>
    /// <text>` (a worker's activity with its stage in brackets; lines inside a message
    /// indented under it).
    pub fn to_text(&self, job_id: &str, job_type: &str) -> String {
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 40).sum::<usize>() + 200);
        out.push_str(&format!("# Log of job {job_id} ({job_type}), oldest first: {} lines\n", self.lines.len()));
        if self.truncated {
            out.push_str(&format!("# {}\n", self.truncation_note()));
        }
        for l in &self.lines {
            let stage = match l.stream {
                Stream::Worker if !l.stage.is_empty() => format!("[{}] ", l.stage),
                _ => String::new(),
            };
            let text = l.text.replace('\n', "\n                                 ");
            out.push_str(&format!("{} {:<7} {stage}{text}\n", utc_millis(l.at), l.stream.name()));
        }
        out
    }
}

/// `2024-05-01T10:00:00.123Z`.
fn utc_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{events::EventBus, store::Op, test_support::TempDir};

    fn activity(id: i64, job_id: &str, source: &'static str, message: &str) -> ActivityView {
        ActivityView {
            id,
            created_at: 1_700_000_000_000 + id,
            job_type: "script".into(),
            job_id: job_id.into(),
            source,
            stage: "running".into(),
            message: message.into(),
        }
    }

    #[test]
    fn lines_are_labelled_with_their_stream_and_lose_the_prefix() {
        let line = |source, message: &str| {
            let l = LogLine::from_activity(activity(1, "j1", source, message));
            (l.stream, l.text)
        };
        assert_eq!(line("executor", "stdout: hello"), (Stream::Stdout, "hello".into()));
        assert_eq!(line("executor", "stderr: oops: no"), (Stream::Stderr, "oops: no".into()));
        assert_eq!(line("executor", "copying 3 files"), (Stream::Worker, "copying 3 files".into()));
        assert_eq!(line("admin", "stdout: looks like output"), (Stream::Admin, "stdout: looks like output".into()));
        assert_eq!(line("detector", "stdout: x"), (Stream::Worker, "stdout: x".into()), "only executors write output");
        assert_eq!(line("executor", "stdout:no space"), (Stream::Worker, "stdout:no space".into()));
    }

    #[tokio::test]
    async fn a_log_keeps_its_newest_lines_oldest_first_and_says_when_it_left_some_out() {
        let dir = TempDir::new("job-log");
        let (store, _) = Store::open(&dir.0, Arc::new(EventBus::new(16))).unwrap();
        for id in 1..=1500 {
            store.write(Op::Activity(Box::new(activity(id, "j1", "executor", &format!("stdout: line {id}")))));
        }
        store.write(Op::Activity(Box::new(activity(1501, "j2", "executor", "stdout: another job"))));
        store.settle().await;

        let all = JobLog::read(&store, "j1", Limits { lines: 5000, bytes: 1 << 20 }).unwrap();
        assert_eq!(all.lines.len(), 1500, "read past one page of the store");
        assert!(!all.truncated);
        assert_eq!((all.lines[0].text.as_str(), all.lines[1499].text.as_str()), ("line 1", "line 1500"));

        let tail = JobLog::read(&store, "j1", Limits { lines: 1200, bytes: 1 << 20 }).unwrap();
        assert_eq!(tail.lines.len(), 1200);
        assert!(tail.truncated);
        assert_eq!(tail.lines[0].text, "line 301", "the newest lines are kept");

        // "line 1500\n" is 10 bytes: 100 bytes hold the 10 newest lines.
        let small = JobLog::read(&store, "j1", Limits { lines: 1000, bytes: 100 }).unwrap();
        assert_eq!(small.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>()[..2], ["line 1491", "line 1492"]);
        assert_eq!(small.lines.len(), 10);
        assert!(small.truncated);

        let exact = JobLog::read(&store, "j2", Limits { lines: 1, bytes: 100 }).unwrap();
        assert_eq!((exact.lines.len(), exact.truncated), (1, false), "a log that just fits is whole");

        let text = small.to_text("j1", "script");
        let mut text_lines = text.lines();
        assert_eq!(text_lines.next(), Some("# Log of job j1 (script), oldest first: 10 lines"));
        assert_eq!(
            text_lines.next(),
            Some("# Earlier lines are left out: this log keeps the newest 1000 lines, at most 100 bytes.")
        );
        assert_eq!(text_lines.next(), Some("2023-11-14T22:13:21.491Z stdout  line 1491"));
        store.close();
    }
}
