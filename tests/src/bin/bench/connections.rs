//! `connections`: many idle workers connected at once, each a raw gRPC stream (hello, then
//! a heartbeat every interval the admin advertises, and an answer to a schema request),
//! several streams per HTTP/2 connection as several workers in one process would have.
//! Reports the admin's resident memory per connected worker and its CPU per 1,000
//! heartbeats.
//!
//! tonic 0.14's server sets no HTTP/2 `max_concurrent_streams` (it passes `None` to hyper,
//! which then advertises no limit), so one connection could carry every stream; they are
//! spread over connections of `--streams-per-connection` (default 100) so per-connection
//! costs are part of the figure, as they would be with many worker processes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use proto::pb::{
    self, admin_to_worker_message::Body as AdminBody, plugin_control_service_client::PluginControlServiceClient,
    worker_to_admin_message::Body,
};
use serde_json::{Value, json};
use tests::fake_worker::{envelope, simple_descriptor};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    Options, Size,
    admin_process::{self, AdminProcess, CpuWindow},
    stats::{counter, num},
};

const IDLE_JOB_TYPE: &str = "bench.idle";

struct Plan {
    counts: Vec<usize>,
    heartbeat_seconds: u64,
    /// CPU and heartbeats are counted over this window.
    window: Duration,
}

fn plan(o: &Options) -> Plan {
    let (counts, heartbeat_seconds, window) = match o.size {
        // The admin's default interval; three intervals of heartbeats.
        Size::Full => (vec![1_000, 10_000], 5, Duration::from_secs(15)),
        Size::Quick => (vec![1_000], 1, Duration::from_secs(5)),
        Size::Smoke => (vec![50], 1, Duration::from_secs(2)),
    };
    Plan { counts: o.connection_counts.clone().unwrap_or(counts), heartbeat_seconds, window }
}

pub async fn run(o: &Options) -> Result<Value> {
    let p = plan(o);
    let spc = o.streams_per_connection;
    let most = p.counts.iter().copied().max().unwrap_or(0);
    let connections_needed = most.div_ceil(spc) as u64;
    let limit = admin_process::open_files_limit();
    // Each side holds one descriptor per connection, plus files, the store and listeners.
    if let Some(limit) = limit
        && limit < connections_needed + 256
    {
        bail!(
            "the open-file limit ({limit}) is too low for {connections_needed} connections; \
             raise it before starting the bench (ulimit -n \"$(ulimit -Hn)\") or put more streams on a connection"
        );
    }
    let mut runs = Vec::new();
    for &n in &p.counts {
        eprintln!("bench:   {n} idle workers");
        runs.push(measure(n, spc, p.heartbeat_seconds, p.window).await?);
    }
    let last = runs.last().cloned().unwrap_or(Value::Null);
    let at_10k = runs.iter().find(|r| r["workers"] == 10_000).map(|r| r["rss_per_worker_kib"].clone());
    Ok(json!({
        "heartbeat_seconds": p.heartbeat_seconds,
        "streams_per_connection": spc,
        "open_files_limit": limit.filter(|l| *l != u64::MAX),
        "max_workers": most,
        "rss_per_worker_kib": last["rss_per_worker_kib"],
        "rss_per_worker_kib_at_10000": at_10k,
        "cpu_s_per_1000_heartbeats": last["cpu_s_per_1000_heartbeats"],
        "runs": runs,
    }))
}

async fn measure(n: usize, spc: usize, heartbeat_seconds: u64, window: Duration) -> Result<Value> {
    let dir = tests::TempDir::new("bench-connections");
    let admin = AdminProcess::start(dir.path(), heartbeat_seconds).await?;
    let stop = CancellationToken::new();
    let result = drive(&admin, n, spc, window, heartbeat_seconds, &stop).await;
    stop.cancel();
    admin.stop(Duration::from_secs(5)).await;
    result
}

async fn drive(
    admin: &AdminProcess,
    n: usize,
    spc: usize,
    window: Duration,
    heartbeat_seconds: u64,
    stop: &CancellationToken,
) -> Result<Value> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = admin.rss_bytes()?;
    // What the admin spends with nobody connected (its timers), for comparison.
    let idle_window = Duration::from_secs(2);
    let c0 = admin.cpu_seconds()?;
    tokio::time::sleep(idle_window).await;
    let idle_cpu_per_s = (admin.cpu_seconds()? - c0) / idle_window.as_secs_f64();

    let connect_start = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(spc) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", admin.grpc))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting to the admin's gRPC port")?;
        channels.push(channel);
    }
    // Open the streams, a bounded number at a time.
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = JoinSet::new();
    for i in 0..n {
        let channel = channels[i / spc].clone();
        let permits = permits.clone();
        let stop = stop.clone();
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await;
            open_idle(channel, i, stop).await
        });
    }
    while let Some(r) = opening.join_next().await {
        r.context("opening an idle worker")??;
    }
    admin_process::wait_json(
        &admin.http,
        "/api/plugin/status",
        "every idle worker registered",
        Duration::from_secs(120),
        |v| (v["workers"].as_u64() == Some(n as u64)).then_some(()),
    )
    .await?;
    let connect_s = connect_start.elapsed().as_secs_f64();

    // Let every session send a heartbeat or two before reading memory.
    tokio::time::sleep(Duration::from_secs(heartbeat_seconds + 1)).await;
    let rss_after = admin.rss_bytes()?;
    let m0 = counter(&admin_process::metrics(&admin.http).await?, "plughost_heartbeats_total").unwrap_or(0.0);
    let cpu_window = CpuWindow::start(admin.pid);
    tokio::time::sleep(window).await;
    let used = cpu_window.finish();
    let elapsed = used.wall;
    let m1 = counter(&admin_process::metrics(&admin.http).await?, "plughost_heartbeats_total").unwrap_or(0.0);
    let end = tests::http::get(&admin.http, "/api/plugin/status").await.json();
    let heartbeats = m1 - m0;
    let cpu = used.admin;
    let per_1000 = |cpu: f64| if heartbeats > 0.0 { cpu / (heartbeats / 1000.0) } else { f64::NAN };
    Ok(json!({
        "workers": n,
        "connections": n.div_ceil(spc),
        "connect_s": num(connect_s, 2),
        "workers_connected_end": end["workers"],
        "rss_before_mib": num(rss_before as f64 / 1048576.0, 1),
        "rss_after_mib": num(rss_after as f64 / 1048576.0, 1),
        "rss_per_worker_kib": num((rss_after as f64 - rss_before as f64) / n as f64 / 1024.0, 2),
        "window_s": num(elapsed, 2),
        "heartbeats": heartbeats,
        "admin_cpu_s": num(cpu, 3),
        "cpu_s_per_1000_heartbeats": num(per_1000(cpu), 4),
        "cpu_s_per_1000_heartbeats_net_of_idle": num(per_1000(cpu - idle_cpu_per_s * elapsed), 4),
        "idle_cpu_s_per_s": num(idle_cpu_per_s, 4),
        "bench_cores_busy": num(used.own / used.wall, 2),
        "other_processes_cores_busy": num(used.other_cores(), 2),
    }))
}

/// One idle worker: hello, the admin's answer, then heartbeats until `stop`.
async fn open_idle(channel: Channel, i: usize, stop: CancellationToken) -> Result<()> {
    let worker_id = format!("idle-{i:05}");
    let mut client = PluginControlServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    let hello = pb::WorkerHello {
        worker_id: worker_id.clone(),
        worker_instance_id: format!("{worker_id}-bench"),
        address: "127.0.0.1:0".into(),
        worker_version: "bench".into(),
        protocol_version: proto::PROTOCOL_VERSION.into(),
        capabilities: vec![pb::JobTypeCapability {
            job_type: IDLE_JOB_TYPE.into(),
            can_execute: true,
            max_execution_concurrency: 1,
            display_name: "Bench idle".into(),
            weight: 1,
            ..Default::default()
        }],
        metadata: Default::default(),
    };
    tx.send(envelope(&worker_id, Body::Hello(hello))).await?;
    let mut inbound = client.worker_stream(ReceiverStream::new(rx)).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(60), inbound.message())
        .await
        .context("no admin hello within 60 s")??
        .context("the admin closed the stream")?;
    let interval = match first.body {
        Some(AdminBody::Hello(h)) if h.accepted => Duration::from_secs(h.heartbeat_interval_seconds.max(1) as u64),
        other => bail!("expected an accepting AdminHello, got {other:?}"),
    };
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = beat.tick() => {
                    let hb = pb::WorkerHeartbeat {
                        worker_id: worker_id.clone(),
                        execution_slots_total: 1,
                        ..Default::default()
                    };
                    if tx.send(envelope(&worker_id, Body::Heartbeat(hb))).await.is_err() {
                        return;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if let Some(AdminBody::RequestConfigSchema(r)) = m.body {
                            let reply = pb::ConfigSchemaResponse {
                                request_id: m.request_id,
                                job_type: r.job_type.clone(),
                                success: true,
                                error_message: String::new(),
                                job_type_descriptor: Some(simple_descriptor(&r.job_type)),
                            };
                            let _ = tx.send(envelope(&worker_id, Body::ConfigSchemaResponse(reply))).await;
                        }
                    }
                    _ => return,
                },
            }
        }
    });
    Ok(())
}
