//! The sandbox: bubblewrap (`bwrap`), checked at start by running it once. Inside, the
//! code sees a read-only system (`/usr` and the `/bin`, `/lib` links, a short list of
//! `/etc` files, interpreter prefixes outside `/usr`), its source read-only at
//! `/job/src`, the helpers at `/job/lib`, a private writable work dir (`/job/work`),
//! artifacts dir (`/job/artifacts`) and result dir (`/job/out`), a private `/tmp`, a
//! fresh `/proc` and a minimal `/dev`. It runs in new PID, IPC, UTS and (unless the
//! definition allows the network) network namespaces, in its own session, with every
//! capability dropped, and dies with the worker. Memory and CPU time are capped with
//! rlimits set by a `sh` wrapper (`ulimit -v`, `ulimit -t`) just before the code starts.
//!
//! What it does not do: it is no cgroup (a process may still fork many children within
//! its PID namespace, and RLIMIT_AS bounds each process, not their sum), it does not
//! change the user id (code of a worker running as root runs as root without
//! capabilities), and with the network allowed it reaches everything the worker does.

use std::path::{Path, PathBuf};

use crate::runtime::{Interpreters, SYSTEM_DIRS, which};

/// Files and directories of `/etc` the code may need (names, users, DNS, TLS roots,
/// time zone, the dynamic linker's cache, Debian's alternatives links). Nothing else
/// of `/etc` is visible.
const ETC: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/mime.types",
];

/// Where the code finds things inside the sandbox.
pub mod inside {
    pub const SRC: &str = "/job/src";
    pub const LIB: &str = "/job/lib";
    pub const WORK: &str = "/job/work";
    pub const ARTIFACTS: &str = "/job/artifacts";
    pub const OUT: &str = "/job/out";
    pub const TMP: &str = "/tmp";
}

/// A working bubblewrap.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub bwrap: PathBuf,
}

/// The host directories of one run.
#[derive(Debug, Clone)]
pub struct Mounts<'a> {
    pub source_root: &'a Path,
    /// The working directory, relative to the source root.
    pub source_path: &'a str,
    pub helpers: &'a Path,
    pub work: &'a Path,
    pub artifacts: &'a Path,
    pub out: &'a Path,
}

impl Sandbox {
    /// Finds `bwrap` and runs it once with the options every run uses; the error says
    /// why there is no sandbox.
    pub fn detect() -> Result<Sandbox, String> {
        let bwrap = which("bwrap").ok_or("bwrap (bubblewrap) is not installed")?;
        let out = std::process::Command::new(&bwrap)
            .args(base_options(false))
            .args(["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().chars().take(300).collect::<String>();
            return Err(format!("{} does not work here: {why}", bwrap.display()));
        }
        Ok(Sandbox { bwrap })
    }

    /// bwrap's arguments for one run, up to the `--` before the command.
    pub fn args(&self, mounts: &Mounts<'_>, interpreters: &Interpreters, network: bool) -> Vec<String> {
        let mut a: Vec<String> = base_options(network).iter().map(|s| s.to_string()).collect();
        let mut push = |parts: &[&str]| a.extend(parts.iter().map(|s| s.to_string()));
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        push(&["--symlink", &target.to_string_lossy(), dir]);
                    }
                }
                Ok(m) if m.is_dir() => push(&["--ro-bind", dir, dir]),
                _ => {}
            }
        }
        for etc in ETC {
            push(&["--ro-bind-try", etc, etc]);
        }
        for prefix in interpreters.extra_prefixes() {
            let p = prefix.to_string_lossy();
            push(&["--ro-bind", &p, &p]);
        }
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", inside::TMP]);
        let host = |p: &Path| p.to_string_lossy().into_owned();
        push(&["--ro-bind", &host(mounts.source_root), inside::SRC]);
        push(&["--ro-bind", &host(mounts.helpers), inside::LIB]);
        push(&["--bind", &host(mounts.work), inside::WORK]);
        push(&["--bind", &host(mounts.artifacts), inside::ARTIFACTS]);
        push(&["--bind", &host(mounts.out), inside::OUT]);
        // The root the mounts hang on is bwrap's own tmpfs: made read-only last.
        push(&["--remount-ro", "/"]);
        let cwd = if mounts.source_path.is_empty() {
            inside::SRC.to_string()
        } else {
            format!("{}/{}", inside::SRC, mounts.source_path.trim_matches('/'))
        };
        push(&["--chdir", &cwd, "--"]);
        a
    }
}

/// Namespaces and process options.
fn base_options(network: bool) -> Vec<&'static str> {
    let mut o = vec![
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "plughost-job",
        "--cap-drop",
        "ALL",
    ];
    if !network {
        o.push("--unshare-net");
    }
    o
}

/// The `sh` wrapper that sets the rlimits and then becomes the command: `sh -c SCRIPT
/// plughost-limits COMMAND...`. A limit that cannot be set stops the run (exit 125).
pub fn limits_wrapper(memory_mb: u64, cpu_seconds: u64) -> Vec<String> {
    let mut script = String::new();
    if memory_mb > 0 {
        let kib = memory_mb.saturating_mul(1024);
        script.push_str(&format!("ulimit -v {kib} || {{ echo 'cannot set the memory limit' >&2; exit 125; }}; "));
    }
    if cpu_seconds > 0 {
        script.push_str(&format!("ulimit -t {cpu_seconds} || {{ echo 'cannot set the CPU limit' >&2; exit 125; }}; "));
    }
    script.push_str("exec \"$@\"");
    vec!["/bin/sh".into(), "-c".into(), script, "plughost-limits".into()]
}
