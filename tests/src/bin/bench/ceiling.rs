//! `ceiling`: the raw cost of the transport. A minimal tonic server and client in this
//! process speak the project's own `PluginControlService/WorkerStream` over loopback: the
//! server sends execute requests shaped like the admin's, the client answers each with a
//! job_completed shaped like the SDK's, W streams (one connection each, as W workers have)
//! with S requests in flight per stream (their slots). Reported as round trips/s; the
//! throughput scenario divides its jobs/s by it so figures from different machines compare.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use prost::Message;
use proto::pb::{
    self,
    admin_to_worker_message::Body as AdminBody,
    plugin_control_service_client::PluginControlServiceClient,
    plugin_control_service_server::{PluginControlService, PluginControlServiceServer},
    worker_to_admin_message::Body,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{Carry, Options, Size, noop::JOB_TYPE, stats::num};

fn duration(size: Size) -> Duration {
    match size {
        Size::Full => Duration::from_secs(5),
        Size::Quick => Duration::from_secs(3),
        Size::Smoke => Duration::from_secs(1),
    }
}

pub async fn run(o: &Options, carry: &mut Carry) -> Result<Value> {
    let window = duration(o.size);
    let m = measure(o.workers, o.slots, window).await?;
    // Strict ping-pong for context: what one request in flight per stream costs.
    let single = measure(o.workers, 1, window).await?;
    carry.round_trips_per_s = Some(m.round_trips_per_s);
    Ok(json!({
        "streams": o.workers,
        "in_flight_per_stream": o.slots,
        "window_s": num(window.as_secs_f64(), 2),
        "round_trips": m.round_trips,
        "round_trips_per_s": num(m.round_trips_per_s, 1),
        "round_trips_per_s_one_in_flight": num(single.round_trips_per_s, 1),
        "request_bytes": m.request_bytes,
        "reply_bytes": m.reply_bytes,
        "note": "one execute request down and one job_completed up per round trip, S in flight per stream (the \
            figure the throughput ratio uses); the real protocol adds an acknowledge and a RUNNING progress update \
            per job",
    }))
}

pub struct Measured {
    pub round_trips: u64,
    pub round_trips_per_s: f64,
    pub request_bytes: usize,
    pub reply_bytes: usize,
}

/// An execute request as the admin builds one for a fresh no-op job.
pub fn execute_request(n: u64) -> pb::AdminToWorkerMessage {
    let request_id = format!("exec-3f2a9c1d-{n}");
    let now = proto::now();
    let job = pb::JobSpec {
        job_id: format!("j{n}"),
        job_type: JOB_TYPE.into(),
        dedupe_key: format!("k{n}"),
        priority: pb::JobPriority::Normal as i32,
        summary: format!("no-op job {n}"),
        created_at: Some(now),
        scheduled_at: Some(now),
        ..Default::default()
    };
    let runtime = pb::AdminRuntimeConfig {
        enabled: true,
        detection_interval_minutes: 1440,
        detection_timeout_seconds: 3600,
        max_jobs_per_detection: 200_000,
        global_execution_concurrency: 512,
        per_worker_execution_concurrency: 0,
        retry_limit: 0,
        retry_backoff_seconds: 1,
        job_type_max_runtime_seconds: 0,
        execution_timeout_seconds: 600,
    };
    pb::AdminToWorkerMessage {
        request_id: request_id.clone(),
        sent_at: Some(now),
        body: Some(AdminBody::ExecuteJobRequest(pb::ExecuteJobRequest {
            request_id,
            job: Some(job),
            admin_runtime: Some(runtime),
            cluster_context: Some(pb::ClusterContext::default()),
            attempt: 1,
            ..Default::default()
        })),
    }
}

/// The job_completed the SDK sends for a no-op job.
pub fn completed_reply(worker_id: &str, request: &pb::AdminToWorkerMessage) -> pb::WorkerToAdminMessage {
    let (job_id, job_type) = match &request.body {
        Some(AdminBody::ExecuteJobRequest(r)) => {
            let j = r.job.clone().unwrap_or_default();
            (j.job_id, j.job_type)
        }
        _ => Default::default(),
    };
    pb::WorkerToAdminMessage {
        worker_id: worker_id.to_string(),
        sent_at: Some(proto::now()),
        body: Some(Body::JobCompleted(pb::JobCompleted {
            request_id: request.request_id.clone(),
            job_id,
            job_type,
            success: true,
            result: Some(pb::JobResult::default()),
            completed_at: Some(proto::now()),
            ..Default::default()
        })),
    }
}

struct PingServer {
    depth: usize,
    replies: Arc<AtomicU64>,
    stop: CancellationToken,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::AdminToWorkerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl PluginControlService for PingServer {
    type WorkerStreamStream = OutStream;

    async fn worker_stream(
        &self,
        request: Request<Streaming<pb::WorkerToAdminMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        let mut inbound = request.into_inner();
        // Bounded like the admin's outbound queue.
        let (tx, rx) = mpsc::channel(1024);
        let (depth, replies, stop) = (self.depth, self.replies.clone(), self.stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            for _ in 0..depth {
                n += 1;
                if tx.send(Ok(execute_request(n))).await.is_err() {
                    return;
                }
            }
            loop {
                let reply = tokio::select! {
                    r = inbound.message() => r,
                    _ = stop.cancelled() => return,
                };
                match reply {
                    Ok(Some(_)) => {
                        replies.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                        if tx.send(Ok(execute_request(n))).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Runs the ping-pong for `window` after a short warm-up.
pub async fn measure(streams: usize, depth: usize, window: Duration) -> Result<Measured> {
    let stop = CancellationToken::new();
    let replies = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = PingServer { depth, replies: replies.clone(), stop: stop.clone() };
    let server_stop = stop.clone();
    let server_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(PluginControlServiceServer::new(server))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                server_stop.cancelled_owned(),
            )
            .await
    });

    let mut clients = Vec::new();
    for i in 0..streams {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting to the ping-pong server")?;
        let mut client = PluginControlServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::WorkerToAdminMessage>(256);
        let mut inbound = client.worker_stream(ReceiverStream::new(rx)).await?.into_inner();
        let worker_id = format!("ceiling-w{i}");
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = stop.cancelled() => return,
                };
                match msg {
                    Ok(Some(m)) => {
                        if tx.send(completed_reply(&worker_id, &m)).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (start, n0) = (Instant::now(), replies.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let (elapsed, n1) = (start.elapsed(), replies.load(Ordering::Relaxed));
    stop.cancel();
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server_task).await;
    let sample = execute_request(123_456);
    Ok(Measured {
        round_trips: n1 - n0,
        round_trips_per_s: (n1 - n0) as f64 / elapsed.as_secs_f64(),
        request_bytes: sample.encoded_len(),
        reply_bytes: completed_reply("bench-w0", &sample).encoded_len(),
    })
}
