//! Worker settings (`WorkerConfig`) and the parsing of the admin address (or the
//! comma-separated list of them), each of which may name either the admin's HTTP
//! listener or its gRPC listener.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use crate::{Error, TlsConfig};

/// How a worker finds and identifies itself to the admin.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Where the admin is:
    /// - `http://host:port` or `https://host:port`: the admin's HTTP address; the gRPC
    ///   port comes from `GET /api/plugin/status` (`worker_grpc_port`), or is the HTTP
    ///   port + 10000 when that lookup fails;
    /// - `grpc://host:port`, `grpcs://host:port` or a bare `host:port`: the gRPC
    ///   address, used as is (TLS when `tls` is set).
    ///
    /// Several admins sharing one database (one leader, the others standbys): list
    /// them separated by commas, such as `grpc://a:33646,grpc://b:33646` (whitespace
    /// around the commas is ignored; each entry is read as above). The worker tries
    /// them in order and moves on at once from one that is down or is a standby; it
    /// waits (the reconnect backoff) only after a whole round found no leader.
    pub admin: String,
    /// A stable identity. `None`: read `<working_dir>/worker_id`, or generate one and
    /// persist it there, so a restarted worker is recognised as the same worker.
    pub worker_id: Option<String>,
    /// The worker's own directory (the worker id file lives here).
    pub working_dir: PathBuf,
    /// Advertised in the hello so operators can find the worker.
    pub address: String,
    /// Advertised in the hello.
    pub version: String,
    /// Advertised in the hello and in heartbeats.
    pub metadata: HashMap<String, String>,
    /// TLS (or mutual TLS) to the admin.
    pub tls: Option<TlsConfig>,
    /// Sent as `authorization: Bearer <token>` on the stream (and the status lookup).
    pub token: Option<String>,
    /// The cap on the reconnect delay.
    pub max_reconnect_delay: Duration,
    /// On a local shutdown (the token passed to `Worker::run`), how long running work
    /// may finish before it is canceled. The admin's shutdown message brings its own.
    /// A job canceled this way is not reported as failed: the stream ends without its
    /// `job_completed`, and the admin requeues it without using up an attempt.
    pub shutdown_grace: Duration,
    /// How long a job may run before the SDK reports it RUNNING, unless its handler
    /// reports progress or an activity sooner (RUNNING is then sent just before that
    /// report). A job that finishes sooner is reported by its `job_completed` alone: the
    /// protocol allows an execution no progress update at all, and short jobs are spared a
    /// message each (the admin shows them going from ASSIGNED straight to their end).
    /// Zero reports RUNNING as each job starts.
    pub running_after: Duration,
}

impl std::fmt::Debug for WorkerConfig {
    // The token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("admin", &self.admin)
            .field("worker_id", &self.worker_id)
            .field("working_dir", &self.working_dir)
            .field("address", &self.address)
            .field("version", &self.version)
            .field("metadata", &self.metadata)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("running_after", &self.running_after)
            .finish()
    }
}

impl WorkerConfig {
    /// Defaults: no TLS, no token, id from the working dir, the crate version, a 30 s
    /// reconnect cap, a 10 s local shutdown grace, and RUNNING reported after 100 ms.
    pub fn new(admin: impl Into<String>, working_dir: impl Into<PathBuf>) -> Self {
        WorkerConfig {
            admin: admin.into(),
            worker_id: None,
            working_dir: working_dir.into(),
            address: String::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            metadata: HashMap::new(),
            tls: None,
            token: None,
            max_reconnect_delay: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            running_after: Duration::from_millis(100),
        }
    }
}

/// The admin address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminAddress {
    /// The admin's HTTP listener; the gRPC port is looked up.
    Http { host: String, port: u16, https: bool },
    /// The gRPC listener itself.
    Grpc { host: String, port: u16 },
}

/// The entries of `admin`: one address, or several separated by commas, each trimmed.
/// An empty entry (`a,,b`, a trailing comma) is an error; an empty `admin` is one empty
/// entry, which the address parser refuses with its own message.
pub(crate) fn admin_list(admin: &str) -> Result<Vec<&str>, Error> {
    let entries: Vec<&str> = admin.split(',').map(str::trim).collect();
    if entries.len() > 1 && entries.iter().any(|e| e.is_empty()) {
        return Err(Error::Config(format!(
            "admin address list {admin:?} has an empty entry; separate the addresses with single commas"
        )));
    }
    Ok(entries)
}

impl AdminAddress {
    /// Parses `admin` and checks it against the TLS settings: `https://` and `grpcs://`
    /// need a CA to trust, and `grpc://` says plaintext, so TLS settings contradict it.
    pub(crate) fn parse(admin: &str, tls: bool) -> Result<Self, Error> {
        let admin = admin.trim();
        let (scheme, rest) = match admin.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, admin),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let default_port = match scheme.as_deref() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            Some("grpc") | Some("grpcs") | None => None,
            Some(other) => {
                return Err(Error::Config(format!(
                    "admin address {admin:?} has scheme {other:?}; use http, https, grpc or grpcs"
                )));
            }
        };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| Error::Config(format!("admin address {admin:?} needs a host and a port")))?;
        match scheme.as_deref() {
            Some("https") | Some("grpcs") if !tls => Err(Error::Config(format!(
                "admin address {admin:?} uses TLS but no tls settings (ca certificate) were given"
            ))),
            Some("grpc") if tls => Err(Error::Config(format!(
                "admin address {admin:?} is plaintext grpc but tls settings were given; use grpcs://"
            ))),
            Some("http") => Ok(AdminAddress::Http { host, port, https: false }),
            Some("https") => Ok(AdminAddress::Http { host, port, https: true }),
            _ => Ok(AdminAddress::Grpc { host, port }),
        }
    }
}

/// `host:port`, `[v6]:port`, or a host alone when a default port exists.
fn split_host_port(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    if authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(end) = authority.find(']') {
        let host = &authority[..=end];
        match authority[end + 1..].strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if authority.len() == end + 1 => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
        None => default_port?,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(host: &str, port: u16) -> AdminAddress {
        AdminAddress::Grpc { host: host.into(), port }
    }

    #[test]
    fn grpc_addresses_are_used_as_is() {
        assert_eq!(AdminAddress::parse("grpc://127.0.0.1:33646", false).unwrap(), grpc("127.0.0.1", 33646));
        assert_eq!(AdminAddress::parse("localhost:1234", false).unwrap(), grpc("localhost", 1234));
        assert_eq!(AdminAddress::parse("grpcs://a.example:9", true).unwrap(), grpc("a.example", 9));
        assert_eq!(AdminAddress::parse("[::1]:5", false).unwrap(), grpc("[::1]", 5));
    }

    #[test]
    fn http_addresses_ask_for_a_lookup() {
        assert_eq!(
            AdminAddress::parse("http://127.0.0.1:23646/", false).unwrap(),
            AdminAddress::Http { host: "127.0.0.1".into(), port: 23646, https: false }
        );
        assert_eq!(
            AdminAddress::parse("https://admin.example", true).unwrap(),
            AdminAddress::Http { host: "admin.example".into(), port: 443, https: true }
        );
    }

    #[test]
    fn a_list_is_split_at_commas_and_trimmed() {
        assert_eq!(admin_list("grpc://a:1").unwrap(), vec!["grpc://a:1"]);
        assert_eq!(
            admin_list(" grpc://a:1 , http://b:2/,[::1]:3 ").unwrap(),
            vec!["grpc://a:1", "http://b:2/", "[::1]:3"]
        );
        assert_eq!(admin_list("").unwrap(), vec![""]);
        for bad in ["a:1,,b:2", "a:1,", ",a:1", " , "] {
            let err = admin_list(bad).unwrap_err();
            assert!(err.to_string().contains("has an empty entry"), "{bad}: {err}");
        }
    }

    #[test]
    fn incomplete_or_contradictory_addresses_are_config_errors() {
        for (addr, tls) in [
            ("grpc://host", false),
            ("host", false),
            ("ftp://host:1", false),
            ("https://host:1", false),
            ("grpc://host:1", true),
            ("host:notaport", false),
            ("", false),
        ] {
            let err = AdminAddress::parse(addr, tls).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{addr}: {err}");
        }
    }
}
