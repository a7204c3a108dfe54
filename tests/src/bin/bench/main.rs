//! The Plughost benchmark (issue 6): a real admin process, real SDK workers over loopback
//! gRPC, one JSON line per scenario on stdout, then a human table with the targets.
//!
//! ```text
//! cargo run --release -p tests --bin bench -- [--quick] [--smoke] [--store sqlite|postgres] [scenario...]
//! ```
//!
//! `connections` needs one open file per HTTP/2 connection on each side: 100 for 10,000
//! workers at the default 100 streams per connection; with `--streams-per-connection 1`
//! raise the limit first (`ulimit -n "$(ulimit -Hn)"`); the bench says so when it is too low.
//!
//! Scenarios: `ceiling`, `throughput`, `writer`, `latency`, `connections`, `restart`,
//! `failover` (all when none is named; `failover` only when PostgreSQL's programs are
//! found). `writer` drives the store's writer alone in this process (see `writer.rs`). `throughput`
//! needs the ceiling figure for its ratio and runs `ceiling` too; `latency` takes its
//! capacity from a SQLite `throughput` when that ran, else from a short probe. The admin
//! runs as a separate process (this binary re-executed as `plughost admin`) so its CPU
//! time and resident memory can be read from /proc.
//!
//! PostgreSQL: `--store postgres` runs `throughput` against a PostgreSQL server the bench
//! starts in a temp dir with durable settings (`fsync` on), and `failover` always uses one:
//! two admins with `--lease-seconds` (2 for `--quick`/`--smoke`, 10 otherwise), SDK workers
//! given both, the leader killed with SIGKILL mid-run (see `failover.rs`). The server's
//! programs come from `PLUGHOST_TEST_PG_BIN`, else the newest
//! `/usr/lib/postgresql/<version>/bin`; as root, it runs as the `postgres` user. The other
//! scenarios always run on SQLite.

mod admin_process;
mod ceiling;
mod connections;
mod failover;
mod latency;
mod noop;
mod report;
mod restart;
mod stats;
mod store;
mod throughput;
mod writer;

use std::{io::Write, time::Instant};

use serde_json::Value;

/// The hidden first argument that turns this binary into `plughost` (the admin child).
pub const ADMIN_CHILD: &str = "__plughost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Ceiling,
    Throughput,
    Latency,
    Connections,
    Restart,
    Failover,
    Writer,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Ceiling,
        Scenario::Throughput,
        Scenario::Writer,
        Scenario::Latency,
        Scenario::Connections,
        Scenario::Restart,
        Scenario::Failover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Ceiling => "ceiling",
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Connections => "connections",
            Scenario::Restart => "restart",
            Scenario::Failover => "failover",
            Scenario::Writer => "writer",
        }
    }

    fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// How big a run is: the issue's full sizes, `--quick` (each scenario under 30 s in release
/// mode on 2 cores) or `--smoke` (the test suite's run in a debug build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Quick,
    Smoke,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub size: Size,
    pub scenarios: Vec<Scenario>,
    /// Throughput jobs (default by size).
    pub jobs: Option<usize>,
    pub workers: usize,
    pub slots: usize,
    /// Idle worker streams per HTTP/2 connection in `connections`.
    pub streams_per_connection: usize,
    /// Idle worker counts in `connections` (default by size).
    pub connection_counts: Option<Vec<usize>>,
    /// Finished jobs in the `restart` store (default by size).
    pub restart_jobs: Option<usize>,
    /// The store `throughput` runs on.
    pub store: store::StoreKind,
    /// `failover`'s `--lease-seconds` (default by size).
    pub lease_seconds: Option<u64>,
}

const USAGE: &str = "usage: bench [--quick] [--smoke] [--jobs N] [--workers W] [--slots S] \
[--connections N[,N...]] [--streams-per-connection N] [--restart-jobs N] [--store sqlite|postgres] \
[--lease-seconds N] [scenario...]
scenarios: ceiling throughput writer latency connections restart failover (default: all; failover
  when PostgreSQL is found)
  --quick   every scenario in under 30 s (release build, 2 cores)
  --smoke   even smaller; for the test suite (debug build)
  --jobs N  jobs of throughput, writer and failover
  --store   the store throughput and writer run on (default sqlite); postgres: a durable server the bench
            starts in a temp dir (PLUGHOST_TEST_PG_BIN, else /usr/lib/postgresql/<version>/bin)
  --lease-seconds N  failover's leader lease (default 2 with --quick/--smoke, else 10; at least 2)
failover: two admins on PostgreSQL, SDK workers given both, the leader killed (SIGKILL) mid-run;
  the standby's time to /readyz 200 and to its first dispatch, jobs lost and jobs doubled
connections needs an open-file limit above its connection count (100 streams per connection by default);
for --streams-per-connection 1 raise it first: ulimit -n \"$(ulimit -Hn)\"";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        size: Size::Full,
        scenarios: Vec::new(),
        jobs: None,
        workers: 8,
        slots: 64,
        streams_per_connection: 100,
        connection_counts: None,
        restart_jobs: None,
        store: store::StoreKind::Sqlite,
        lease_seconds: None,
    };
    let mut quick = false;
    let mut smoke = false;
    let (mut workers, mut slots) = (None, None);
    let mut it = args.iter();
    let number = |flag: &str, v: Option<&String>| -> Result<usize, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        let n: usize = v.replace('_', "").parse().map_err(|_| format!("{flag}: {v:?} is not a number"))?;
        if n == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
        Ok(n)
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--smoke" => smoke = true,
            "--jobs" => o.jobs = Some(number(a, it.next())?),
            "--workers" => workers = Some(number(a, it.next())?),
            "--slots" => slots = Some(number(a, it.next())?),
            "--streams-per-connection" => o.streams_per_connection = number(a, it.next())?,
            "--restart-jobs" => o.restart_jobs = Some(number(a, it.next())?),
            "--store" => {
                let v = it.next().ok_or("--store needs a value")?;
                o.store = store::StoreKind::parse(v)
                    .ok_or_else(|| format!("--store: {v:?} is neither sqlite nor postgres"))?;
            }
            "--lease-seconds" => {
                let n = number(a, it.next())?;
                if !(2..=300).contains(&n) {
                    return Err("--lease-seconds must be 2 to 300 (the admin's range)".into());
                }
                o.lease_seconds = Some(n as u64);
            }
            "--connections" => {
                let v = it.next().ok_or("--connections needs a value")?;
                let counts = v
                    .split(',')
                    .map(|s| number("--connections", Some(&s.trim().to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                o.connection_counts = Some(counts);
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
            s => {
                let sc = Scenario::parse(s).ok_or_else(|| format!("unknown scenario {s:?}"))?;
                if !o.scenarios.contains(&sc) {
                    o.scenarios.push(sc);
                }
            }
        }
    }
    o.size = if smoke {
        Size::Smoke
    } else if quick {
        Size::Quick
    } else {
        Size::Full
    };
    if o.scenarios.is_empty() {
        o.scenarios = Scenario::ALL.to_vec();
        if !store::postgres_available() {
            eprintln!("bench: PostgreSQL's programs were not found (PLUGHOST_TEST_PG_BIN); skipping failover");
            o.scenarios.retain(|s| *s != Scenario::Failover);
        }
    }
    // The throughput ratio needs the ceiling of the same run.
    if o.scenarios.contains(&Scenario::Throughput) && !o.scenarios.contains(&Scenario::Ceiling) {
        o.scenarios.push(Scenario::Ceiling);
    }
    // Run order: ceiling before throughput (ratio), throughput before latency (capacity).
    o.scenarios.sort_by_key(|s| Scenario::ALL.iter().position(|x| x == s));
    // The smoke size is small enough for a debug build in the test suite.
    o.workers = workers.unwrap_or(if smoke { 2 } else { 8 });
    o.slots = slots.unwrap_or(if smoke { 16 } else { 64 });
    Ok(o)
}

/// Figures of earlier scenarios that later ones use.
#[derive(Debug, Default)]
pub struct Carry {
    pub round_trips_per_s: Option<f64>,
    pub jobs_per_s: Option<f64>,
}

/// The same allocator as the `plughost` binary, since this process also runs the admin
/// (re-executed as `__plughost`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(ADMIN_CHILD) {
        // The admin child: this very binary, running the real `plughost` command line.
        let rest = std::env::args_os().skip(2);
        let argv = std::iter::once(std::ffi::OsString::from("plughost")).chain(rest);
        std::process::exit(plughost::main_with_args(argv));
    }
    let options = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let ok = runtime.block_on(run(options));
    // Workers and streams still winding down must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(options: Options) -> bool {
    eprintln!(
        "bench: size {:?}, scenarios {:?}; the machine has {} cores; figures are noisy while other work runs",
        options.size,
        options.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let mut carry = Carry::default();
    let mut results: Vec<Value> = Vec::new();
    let mut ok = true;
    for scenario in options.scenarios.clone() {
        let started = Instant::now();
        eprintln!("bench: {} ...", scenario.name());
        let outcome = match scenario {
            Scenario::Ceiling => ceiling::run(&options, &mut carry).await,
            Scenario::Throughput => throughput::run(&options, &mut carry).await,
            Scenario::Latency => latency::run(&options, &mut carry).await,
            Scenario::Connections => connections::run(&options).await,
            Scenario::Restart => restart::run(&options).await,
            Scenario::Failover => failover::run(&options).await,
            Scenario::Writer => writer::run(&options).await,
        };
        let mut value = match outcome {
            Ok(v) => v,
            Err(e) => {
                ok = false;
                eprintln!("bench: {} failed: {e:#}", scenario.name());
                serde_json::json!({ "error": format!("{e:#}") })
            }
        };
        // Keys come out sorted (serde_json's map); every line names its scenario and size.
        if let Value::Object(map) = &mut value {
            map.insert("scenario".into(), scenario.name().into());
            map.insert("size".into(), format!("{:?}", options.size).to_lowercase().into());
            map.insert("scenario_wall_s".into(), stats::round(started.elapsed().as_secs_f64(), 2).into());
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
        results.push(value);
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", report::table(&results));
    let _ = out.flush();
    ok
}
