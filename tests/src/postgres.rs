//! PostgreSQL for the high-availability tests: databases on the suite's shared server
//! (`PLUGHOST_TEST_POSTGRES`, which `scripts/test` starts) and servers of a test's own,
//! which it may stop and start again (`PLUGHOST_TEST_PG_BIN` names the binaries; without
//! it, the newest `/usr/lib/postgresql/<version>/bin` is used). The tests' servers run with
//! `fsync=off`; the benchmark starts durable ones ([`PgServer::start_durable`]).

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::TempDir;

const HOW: &str = "run the tests through ./scripts/test, which starts PostgreSQL for them";

/// The directory of PostgreSQL's programs: `PLUGHOST_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` holding `initdb` (Debian's and Ubuntu's layout).
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PLUGHOST_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn bin(name: &str) -> PathBuf {
    let dir = bin_dir().unwrap_or_else(|| {
        panic!("PLUGHOST_TEST_PG_BIN is not set and there is no /usr/lib/postgresql/<version>/bin: {HOW}")
    });
    dir.join(name)
}

fn is_root() -> bool {
    // The effective uid of this process, from /proc (no libc call).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// A command run as the unprivileged `postgres` user when the tests run as root
/// (PostgreSQL refuses to run as root).
fn as_postgres(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database on the suite's server; returns its URL.
pub fn database(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let server =
        std::env::var("PLUGHOST_TEST_POSTGRES").unwrap_or_else(|_| panic!("PLUGHOST_TEST_POSTGRES is not set: {HOW}"));
    let name = format!("it_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut psql = Command::new(bin("psql"));
    psql.args(["-v", "ON_ERROR_STOP=1", "-q", "-d", &server, "-c", &format!("CREATE DATABASE {name}")]);
    run(psql, "create a test database");
    let (base, _) = server.rsplit_once('/').expect("PLUGHOST_TEST_POSTGRES ends in /<database>");
    format!("{base}/{name}")
}

/// A PostgreSQL server of the test's own, on a free loopback port, in a temp dir.
pub struct PgServer {
    dir: TempDir,
    pub port: u16,
    durable: bool,
}

impl PgServer {
    /// A server for tests: `fsync=off` (fast; a crash of the machine may lose commits).
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// A server with PostgreSQL's durable defaults (`fsync=on`, synchronous commits), for
    /// figures that should resemble production.
    pub fn start_durable() -> PgServer {
        PgServer::start_with(true)
    }

    fn start_with(durable: bool) -> PgServer {
        let dir = TempDir::new("pg");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres"]).arg(dir.path());
                    c
                },
                "give the temp dir to the postgres user",
            );
        }
        let mut initdb = as_postgres(bin("initdb"));
        initdb.arg("-D").arg(dir.path().join("data")).args(["-U", "postgres", "-A", "trust", "--no-sync"]);
        run(initdb, "initdb");
        let server = PgServer { dir, port: crate::harness::free_port(), durable };
        server.resume();
        server
    }

    /// The server's data directory (for its own disk's figures).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server again on the same port and data (after [`PgServer::stop`]).
    pub fn resume(&self) {
        let mut start = as_postgres(bin("pg_ctl"));
        start
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-s", "-o"])
            .arg(format!(
                "-h 127.0.0.1 -p {} -k {}{}",
                self.port,
                self.dir.path().display(),
                if self.durable { "" } else { " -c fsync=off" }
            ));
        start.arg("start");
        run(start, "start PostgreSQL");
    }

    /// Stops the server at once, as a crash would (connections are cut).
    pub fn stop(&self) {
        let mut stop = as_postgres(bin("pg_ctl"));
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-s", "stop"]);
        run(stop, "stop PostgreSQL");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut stop = as_postgres(bin("pg_ctl"));
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-s", "stop"]);
        let _ = stop.output();
    }
}

impl PgServer {
    /// Turns TLS on with `pair` as the server's certificate and key (restarting the
    /// server); clients may still connect in clear unless they ask for TLS.
    pub fn enable_tls(&self, pair: &crate::certs::CertPair) {
        let data = self.dir.path().join("data");
        std::fs::write(data.join("server.crt"), &pair.cert_pem).expect("write server.crt");
        std::fs::write(data.join("server.key"), &pair.key_pem).expect("write server.key");
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("postgresql.conf");
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .expect("write postgresql.conf");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres").arg(data.join("server.crt")).arg(data.join("server.key"));
            run(chown, "give the certificate to the postgres user");
        }
        // PostgreSQL refuses a key others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        self.stop();
        self.resume();
    }

    /// One SQL query's result, unaligned and without headers (`psql -tA`).
    pub fn query(&self, sql: &str) -> String {
        let mut psql = Command::new(bin("psql"));
        psql.args(["-v", "ON_ERROR_STOP=1", "-tA", "-d", &self.url(), "-c", sql]);
        let out = psql.output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
