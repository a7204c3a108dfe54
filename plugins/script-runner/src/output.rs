//! A script's stdout and stderr, forwarded line by line under one byte budget shared
//! by both streams. Past the budget the pipes are still drained (a script must never
//! block on a full pipe) but nothing more is forwarded, and one `Truncated` event says
//! so.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::mpsc,
};

/// A line longer than this is forwarded in pieces.
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(&self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// The script started as process `pid` (also its process group id).
    Started { pid: u32 },
    /// One line (without its newline), or the part of it that fit the budget.
    Line { stream: Stream, text: String },
    /// The budget ran out; nothing more is forwarded.
    Truncated { limit: usize },
}

/// What starts a progress line on stdout: `plughost-progress <percent> [message]`.
pub const PROGRESS_PREFIX: &str = "plughost-progress ";

/// A stdout line that reports progress (`plughost-progress 40 copying part 2`): the
/// percent (clamped to 0..=100) and the message. Any other line, or a percent that is
/// not a number, is ordinary output.
pub fn progress_line(stream: Stream, text: &str) -> Option<(f64, &str)> {
    if stream != Stream::Stdout {
        return None;
    }
    let rest = text.strip_prefix(PROGRESS_PREFIX)?.trim_start();
    let (percent, message) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent: f64 = percent.trim_end_matches('%').parse().ok().filter(|p: &f64| p.is_finite())?;
    Some((percent.clamp(0.0, 100.0), message.trim()))
}

/// The output budget of one run, and byte counts per stream.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    truncated: AtomicBool,
    stdout_bytes: AtomicU64,
    stderr_bytes: AtomicU64,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            truncated: AtomicBool::new(false),
            stdout_bytes: AtomicU64::new(0),
            stderr_bytes: AtomicU64::new(0),
        }
    }

    /// Takes up to `n` bytes of the budget; returns how many were granted.
    fn take(&self, n: usize) -> usize {
        let mut granted = 0;
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            granted = n.min(self.limit.saturating_sub(used));
            Some(used + granted)
        });
        granted
    }

    /// Marks the output truncated; true the first time.
    fn truncate(&self) -> bool {
        !self.truncated.swap(true, Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes forwarded (newlines included).
    pub fn forwarded(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Bytes the script wrote to `stream`, forwarded or not.
    pub fn written(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Stdout => self.stdout_bytes.load(Ordering::Relaxed),
            Stream::Stderr => self.stderr_bytes.load(Ordering::Relaxed),
        }
    }

    fn count(&self, stream: Stream, n: usize) {
        let counter = match stream {
            Stream::Stdout => &self.stdout_bytes,
            Stream::Stderr => &self.stderr_bytes,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Reads `reader` to its end, forwarding lines within the budget. A closed receiver
/// does not stop the draining.
pub async fn forward(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    budget: Arc<Budget>,
    events: mpsc::Sender<OutputEvent>,
) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        budget.count(stream, n);
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            emit(&line[..line.len() - 1], 1, stream, &budget, &events).await;
        }
        while pending.len() >= MAX_LINE_BYTES {
            let piece: Vec<u8> = pending.drain(..MAX_LINE_BYTES).collect();
            emit(&piece, 0, stream, &budget, &events).await;
        }
    }
    if !pending.is_empty() {
        emit(&pending, 0, stream, &budget, &events).await;
    }
}

/// Forwards one line (`newline` is the terminator's byte count, charged too).
async fn emit(line: &[u8], newline: usize, stream: Stream, budget: &Budget, events: &mpsc::Sender<OutputEvent>) {
    if budget.truncated() {
        return;
    }
    let granted = budget.take(line.len() + newline);
    let text = &line[..granted.min(line.len())];
    if !text.is_empty() {
        let text = String::from_utf8_lossy(text).into_owned();
        let _ = events.send(OutputEvent::Line { stream, text }).await;
    }
    if granted < line.len() + newline && budget.truncate() {
        let _ = events.send(OutputEvent::Truncated { limit: budget.limit() }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], limit: usize) -> (Vec<OutputEvent>, Arc<Budget>) {
        let budget = Arc::new(Budget::new(limit));
        let (tx, mut rx) = mpsc::channel(1000);
        forward(input, Stream::Stdout, budget.clone(), tx).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (events, budget)
    }

    fn line(text: &str) -> OutputEvent {
        OutputEvent::Line { stream: Stream::Stdout, text: text.into() }
    }

    #[test]
    fn a_progress_line_gives_a_clamped_percent_and_its_message_and_only_on_stdout() {
        assert_eq!(
            progress_line(Stream::Stdout, "plughost-progress 40 copying part 2"),
            Some((40.0, "copying part 2"))
        );
        assert_eq!(progress_line(Stream::Stdout, "plughost-progress 12.5%"), Some((12.5, "")));
        assert_eq!(progress_line(Stream::Stdout, "plughost-progress 250 over"), Some((100.0, "over")));
        assert_eq!(progress_line(Stream::Stdout, "plughost-progress -3 under"), Some((0.0, "under")));
        assert_eq!(progress_line(Stream::Stdout, "plughost-progress half done"), None);
        assert_eq!(progress_line(Stream::Stdout, "plughost-progress NaN"), None);
        assert_eq!(progress_line(Stream::Stdout, "progress 40"), None);
        assert_eq!(progress_line(Stream::Stderr, "plughost-progress 40 copying"), None);
    }

    #[tokio::test]
    async fn lines_are_split_and_the_last_one_needs_no_newline() {
        let (events, budget) = lines(b"one\ntwo\nthree", 100).await;
        assert_eq!(events, [line("one"), line("two"), line("three")]);
        assert_eq!(budget.forwarded(), 13);
        assert!(!budget.truncated());
    }

    #[tokio::test]
    async fn output_past_the_limit_is_cut_once_and_still_counted() {
        let (events, budget) = lines(b"aaaa\nbbbb\ncccc\n", 7).await;
        assert_eq!(events, [line("aaaa"), line("bb"), OutputEvent::Truncated { limit: 7 }]);
        assert_eq!(budget.forwarded(), 7);
        assert_eq!(budget.written(Stream::Stdout), 15);
    }

    #[tokio::test]
    async fn an_endless_line_is_forwarded_in_pieces() {
        let input = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        let (events, _) = lines(&input, usize::MAX).await;
        assert_eq!(events.len(), 3);
    }
}
