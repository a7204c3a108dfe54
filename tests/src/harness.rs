//! Starting a real admin for a test: in-process on 127.0.0.1:0 with a temp data dir, or
//! as a real `plughost` process (for kill -9 tests).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use admin::{Admin, AdminConfig};
use serde_json::Value;

use crate::{TempDir, http};

pub struct TestAdmin {
    pub admin: Option<Admin>,
    pub http: String,
    pub grpc: SocketAddr,
}

impl TestAdmin {
    /// An admin with test-friendly timings (1 s heartbeats, first detection at once).
    pub async fn start(data_dir: &std::path::Path, tweak: impl FnOnce(&mut AdminConfig)) -> TestAdmin {
        let mut config = AdminConfig::ephemeral(data_dir);
        config.heartbeat_interval = Duration::from_secs(1);
        config.reconnect_delay = Duration::from_secs(1);
        config.first_detection_delay = Duration::from_millis(0);
        config.shutdown_grace = Duration::from_secs(1);
        tweak(&mut config);
        let admin = Admin::start(config).await.expect("admin starts");
        http::register_admin_token(&admin.http_addr().to_string(), data_dir);
        TestAdmin { http: admin.http_addr().to_string(), grpc: admin.grpc_addr(), admin: Some(admin) }
    }

    pub fn components(&self) -> &std::sync::Arc<admin::Components> {
        self.admin.as_ref().expect("admin running").components()
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = http::get(&self.http, path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    pub async fn jobs(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/api/plugin/jobs?{query}")).await.as_array().cloned().unwrap_or_default()
    }

    /// Waits until every job listed for `query` is in `state` and there are `n` of them.
    pub async fn wait_jobs(&self, what: &str, query: &str, n: usize, state: &str) -> Vec<Value> {
        crate::wait_for(what, Duration::from_secs(30), || async {
            let jobs = self.jobs(query).await;
            (jobs.len() == n && jobs.iter().all(|j| j["state"] == format!("job_state_{state}"))).then_some(jobs)
        })
        .await
    }

    pub async fn stop(mut self) {
        if let Some(a) = self.admin.take() {
            a.shutdown().await;
        }
    }
}

/// A real `plughost admin` process.
pub struct AdminProcess {
    pub child: std::process::Child,
    pub http: String,
    pub grpc: SocketAddr,
}

/// Two free loopback ports (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl AdminProcess {
    pub async fn spawn(
        binary: &std::path::Path,
        data_dir: &std::path::Path,
        http_port: u16,
        grpc_port: u16,
    ) -> AdminProcess {
        AdminProcess::spawn_with(binary, data_dir, http_port, grpc_port, &[]).await
    }

    /// [`AdminProcess::spawn`] with more flags for `plughost admin`.
    pub async fn spawn_with(
        binary: &std::path::Path,
        data_dir: &std::path::Path,
        http_port: u16,
        grpc_port: u16,
        extra: &[&str],
    ) -> AdminProcess {
        let child = std::process::Command::new(binary)
            .args(["admin", "--data-dir"])
            .arg(data_dir)
            .args(["--http-addr", &format!("127.0.0.1:{http_port}"), "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--heartbeat-seconds", "1"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn plughost admin");
        // Owned before the wait, so a readiness timeout (a panic) still kills the process.
        let admin = AdminProcess {
            child,
            http: format!("127.0.0.1:{http_port}"),
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
        };
        let http = &admin.http;
        crate::wait_for("admin process ready", Duration::from_secs(30), || async {
            let ok =
                tokio::net::TcpStream::connect(http).await.is_ok() && http::get(http, "/readyz").await.status == 200;
            ok.then_some(())
        })
        .await;
        http::register_admin_token(http, data_dir);
        admin
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AdminProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temp data dir plus its path, for tests that restart an admin on the same data.
pub fn data_dir(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.path().to_path_buf();
    (dir, path)
}
