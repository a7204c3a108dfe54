//! The admin under test as a separate process: started from this binary (re-executed as
//! the real `plughost admin` command line), read through /proc for CPU time and resident
//! memory, stopped with SIGTERM (SIGKILL if it does not exit).
//!
//! Why not the `plughost-under-test` binary beside this one: `cargo run --bin bench` builds
//! only this binary, so that one may be missing or, worse, stale (built from older admin
//! code). Re-executing ourselves always runs the admin code this bench was built with, with
//! the same profile.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tests::{harness::free_port, http};

pub struct AdminProcess {
    child: Child,
    pub pid: u32,
    pub http: String,
    pub grpc: SocketAddr,
    /// From spawn to the first `GET /readyz` answered 200.
    pub ready_after: Duration,
    spawned_at: Instant,
}

/// Which store the admin runs on.
#[derive(Debug, Clone, Default)]
pub struct AdminStore {
    /// `None`: SQLite in the data dir (the default). `Some(url)`: `--store <url>`.
    pub postgres: Option<String>,
    /// `--lease-seconds` (PostgreSQL only); the admin's default when `None`.
    pub lease_seconds: Option<u64>,
}

impl AdminProcess {
    /// Starts `plughost admin` on free loopback ports with `data_dir` and waits until
    /// `/readyz` says ready. Its log (warnings and errors) goes to our stderr.
    pub async fn start(data_dir: &Path, heartbeat_seconds: u64) -> Result<AdminProcess> {
        AdminProcess::start_on(data_dir, heartbeat_seconds, &AdminStore::default()).await
    }

    /// [`AdminProcess::start`] on `store`. With PostgreSQL the admin is ready once it leads
    /// (it stands by until it holds the lease: at once on a fresh database).
    pub async fn start_on(data_dir: &Path, heartbeat_seconds: u64, store: &AdminStore) -> Result<AdminProcess> {
        let mut admin = AdminProcess::spawn(data_dir, heartbeat_seconds, store)?;
        admin.wait_ready(data_dir, Duration::from_secs(300)).await?;
        Ok(admin)
    }

    /// Spawns the admin without waiting for it (a standby never becomes ready).
    pub fn spawn(data_dir: &Path, heartbeat_seconds: u64, store: &AdminStore) -> Result<AdminProcess> {
        let (http_port, grpc_port) = (free_port(), free_port());
        // /proc/self/exe still runs this binary when a rebuild has replaced the file meanwhile.
        let exe = match Path::new("/proc/self/exe") {
            p if p.exists() => p.to_path_buf(),
            _ => std::env::current_exe().context("locating the bench binary")?,
        };
        let mut command = Command::new(&exe);
        command
            .arg(crate::ADMIN_CHILD)
            .args(["admin", "--data-dir"])
            .arg(data_dir)
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--heartbeat-seconds", &heartbeat_seconds.to_string()])
            // Lift the limits the bench is not about: every worker dials from loopback, one
            // connection each with --streams-per-connection 1 (the open-file limit still
            // bounds the caps), and one detection proposes every job of a run.
            .args(["--max-connections", "1000000", "--max-connections-per-peer", "1000000"])
            .args(["--max-proposals-per-detection", "100000000"]);
        if let Some(url) = &store.postgres {
            command.args(["--store", url]);
            if let Some(lease) = store.lease_seconds {
                command.args(["--lease-seconds", &lease.to_string()]);
            }
        }
        let started = Instant::now();
        let child = command
            // Per-job info lines would measure the terminal, not the admin.
            .env("RUST_LOG", "warn")
            .env_remove("PLUGHOST_STORE")
            .env_remove("PLUGHOST_LEASE_SECONDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {} admin", exe.display()))?;
        let pid = child.id();
        Ok(AdminProcess {
            child,
            pid,
            http: format!("127.0.0.1:{http_port}"),
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            ready_after: Duration::ZERO,
            spawned_at: started,
        })
    }

    /// Waits until `/readyz` answers 200 (on PostgreSQL: until this admin leads); sets
    /// `ready_after` and registers the admin's token for the bench's API calls.
    pub async fn wait_ready(&mut self, data_dir: &Path, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the admin exited before it was ready: {status}");
            }
            if readyz_status(&self.http).await == Some(200) {
                self.ready_after = self.spawned_at.elapsed();
                http::register_admin_token(&self.http, data_dir);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the admin was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the admin listens and has written its token, then registers the token
    /// (for a standby, which is never ready).
    pub async fn wait_listening(&mut self, data_dir: &Path, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let token = data_dir.join("plugin").join("admin.token");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the admin exited before it listened: {status}");
            }
            if token.exists() && readyz_status(&self.http).await.is_some() {
                http::register_admin_token(&self.http, data_dir);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the admin did not listen within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL at once (`kill -9`): no shutdown, no lease release. Returns when it is reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// User + system CPU seconds the admin has used so far (all its threads).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid)
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        status_kib(self.pid, "VmRSS:").map(|k| k * 1024)
    }

    /// Peak resident memory (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        status_kib(self.pid, "VmHWM:").map(|k| k * 1024)
    }

    pub fn state_db(data_dir: &Path) -> PathBuf {
        data_dir.join("plugin").join("state.db")
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Connected SDK workers
    /// should be stopped first, or the admin waits for them (its shutdown grace).
    pub async fn stop(mut self, grace: Duration) {
        // Already gone (killed and reaped): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AdminProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /readyz`'s status, `None` while nothing listens. One plain HTTP/1.1 request per
/// call, so no probe leaves the admin a connection without a request (which its listener
/// would count as a handshake timeout ten seconds later).
pub async fn readyz_status(http_addr: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http_addr).await.ok()?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {http_addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    let read = async {
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok()??;
    // "HTTP/1.1 200 OK"
    std::str::from_utf8(&head).ok()?.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second for /proc/<pid>/stat (`getconf CLK_TCK`, else Linux's usual 100).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

pub fn cpu_seconds(pid: u32) -> Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds in a `/proc` stat file: a process's (`/proc/<pid>/stat`) or
/// one thread's (`/proc/<pid>/task/<tid>/stat`).
pub fn stat_cpu_seconds(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    // The command name may hold spaces and parentheses; fields count from after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    Ok((utime + stime) / clock_ticks())
}

/// User + system CPU seconds of each thread of `pid` so far, summed by thread name (the
/// kernel's 15-character `comm`: `plughost-store` is the store's writer, tokio's workers
/// share one name). Threads that exited before the call are not counted.
pub fn thread_cpu_seconds(pid: u32) -> Result<HashMap<String, f64>> {
    let mut by_name: HashMap<String, f64> = HashMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("/proc/{pid}/task"))?;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *by_name.entry(name).or_default() += (ticks(11) + ticks(12)) / clock_ticks();
    }
    Ok(by_name)
}

/// The store writer thread's name (see `admin/src/store/writer.rs`), the same on SQLite
/// and PostgreSQL (there it waits on the database's commits; PostgreSQL's own CPU is in
/// its server processes, not the admin's). PostgreSQL reads run on `plughost-pg-read`.
pub const STORE_WRITER_THREAD: &str = "plughost-store";

/// Per-thread CPU over an interval, from two [`thread_cpu_seconds`] readings: seconds by
/// thread name, busiest first.
pub fn thread_cpu_delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> =
        after.iter().map(|(name, s)| (name.clone(), s - before.get(name).copied().unwrap_or(0.0))).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

/// The soft limit on open files of this process (the admin child inherits it).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    if soft == "unlimited" { Some(u64::MAX) } else { soft.parse().ok() }
}

/// Polls `GET path` until `check` accepts the JSON, or fails after `deadline`.
pub async fn wait_json<T>(
    http_addr: &str,
    path: &str,
    what: &str,
    deadline: Duration,
    mut check: impl FnMut(&serde_json::Value) -> Option<T>,
) -> Result<T> {
    let until = Instant::now() + deadline;
    loop {
        let r = http::get(http_addr, path).await;
        if r.status == 200
            && let Some(v) = check(&r.json())
        {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The admin's Prometheus text.
pub async fn metrics(http_addr: &str) -> Result<String> {
    let r = http::get(http_addr, "/metrics").await;
    if r.status != 200 {
        bail!("GET /metrics: {}", r.status);
    }
    Ok(r.text())
}

/// Busy CPU seconds of the whole machine so far (all processes, every namespace), from
/// /proc/stat: everything but idle and iowait.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Ok((total - idle) / clock_ticks())
}

/// CPU use over an interval: the admin's, this process's (the bench's workers) and
/// everything else on the machine (other people's builds), so noisy figures say so.
pub struct CpuWindow {
    admin_pid: u32,
    at: Instant,
    admin: f64,
    own: f64,
    machine: f64,
}

/// What a [`CpuWindow`] saw, in CPU seconds over `wall` seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub wall: f64,
    pub admin: f64,
    pub own: f64,
    pub machine: f64,
}

impl CpuUse {
    /// Cores busy with work that is neither the admin nor this process.
    pub fn other_cores(&self) -> f64 {
        ((self.machine - self.admin - self.own) / self.wall).max(0.0)
    }
}

impl CpuWindow {
    pub fn start(admin_pid: u32) -> CpuWindow {
        CpuWindow::starting_with(admin_pid, Instant::now(), cpu_seconds(admin_pid).unwrap_or(0.0))
    }

    /// A window that started at `at`, when the admin had used `admin_cpu` seconds.
    pub fn starting_with(admin_pid: u32, at: Instant, admin_cpu: f64) -> CpuWindow {
        CpuWindow {
            admin_pid,
            at,
            admin: admin_cpu,
            own: cpu_seconds(std::process::id()).unwrap_or(0.0),
            machine: machine_busy_seconds().unwrap_or(0.0),
        }
    }

    pub fn finish(&self) -> CpuUse {
        CpuUse {
            wall: self.at.elapsed().as_secs_f64().max(1e-9),
            admin: cpu_seconds(self.admin_pid).unwrap_or(f64::NAN) - self.admin,
            own: cpu_seconds(std::process::id()).unwrap_or(f64::NAN) - self.own,
            machine: machine_busy_seconds().unwrap_or(f64::NAN) - self.machine,
        }
    }
}

/// Requests completed by the block device that holds a directory, from
/// `/sys/dev/block/<major>:<minor>/stat`: every process's I/O to that device counts.
#[derive(Clone, Copy, Debug)]
pub struct DiskCounters {
    pub writes: u64,
    /// Cache flushes (what an fsync ends with); `None` on kernels before 5.5.
    pub flushes: Option<u64>,
}

impl DiskCounters {
    /// `None` where the directory is not on a block device (tmpfs, overlay).
    pub fn of(dir: &Path) -> Option<DiskCounters> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(dir).ok()?.dev();
        // glibc's major() and minor() of a dev_t.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
        let fields: Vec<u64> = stat.split_whitespace().map_while(|f| f.parse().ok()).collect();
        Some(DiskCounters { writes: *fields.get(4)?, flushes: fields.get(15).copied() })
    }

    /// What was completed between `self` and `later`.
    pub fn until(self, later: DiskCounters) -> DiskCounters {
        DiskCounters {
            writes: later.writes.saturating_sub(self.writes),
            flushes: self.flushes.zip(later.flushes).map(|(a, b)| b.saturating_sub(a)),
        }
    }
}

/// Median and worst of a few 4 KiB write + fsync rounds in `dir`: what one group commit's
/// sync costs on this machine, so figures from different disks compare. Each round
/// overwrites a block of a file that already has its size, as a commit does to the
/// store's write-ahead log once the log has grown (SQLite reuses it from the start after
/// a checkpoint); appending instead makes every sync also commit the file's new size,
/// which on this VM's ext4 took 0.7-1.3 ms against 0.2 ms for the log's own syncs.
pub fn fsync_probe(dir: &Path) -> Result<(f64, f64)> {
    use std::io::{Seek, SeekFrom, Write};
    const ROUNDS: usize = 50;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&vec![0u8; 4096 * ROUNDS])?;
    f.sync_all()?;
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        f.seek(SeekFrom::Start((round * 4096) as u64))?;
        f.write_all(&[1u8; 4096])?;
        let t = Instant::now();
        f.sync_all()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[times.len() - 1]))
}
