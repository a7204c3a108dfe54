//! A programmable worker that speaks the protocol over raw gRPC (no SDK), for admin tests
//! that need a peer to behave in a chosen way: fail an attempt, answer "at capacity",
//! hang until cancelled, stall its stream, or vanish mid-job.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use proto::pb::{
    self, admin_to_worker_message::Body as AdminBody, plugin_control_service_client::PluginControlServiceClient,
    worker_to_admin_message::Body,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// What the worker does with one execute request.
#[derive(Debug, Clone)]
pub enum Exec {
    /// Progress at these percentages, then success.
    Succeed(Vec<f64>),
    Fail(String),
    AtCapacity,
    /// Reports RUNNING and then waits for a cancel request, which it confirms.
    HangUntilCancel,
    /// Reports RUNNING and never answers again (not even to cancel).
    Ignore,
}

pub type DetectFn = Arc<dyn Fn(&pb::RunDetectionRequest) -> Vec<Vec<pb::JobProposal>> + Send + Sync>;
pub type ExecFn = Arc<dyn Fn(&pb::ExecuteJobRequest) -> Exec + Send + Sync>;

#[derive(Clone)]
pub struct FakeWorkerSpec {
    pub worker_id: String,
    pub capabilities: Vec<pb::JobTypeCapability>,
    pub descriptors: HashMap<String, pb::JobTypeDescriptor>,
    pub detect: DetectFn,
    pub exec: ExecFn,
    /// Send heartbeats at the interval the admin advertises.
    pub heartbeat: bool,
    /// Heartbeat at this interval instead, whatever the admin advertises, the first one a
    /// whole interval after the hello (as SeaweedFS's Go worker does).
    pub heartbeat_every: Option<Duration>,
    /// Never answer detection requests (for detection timeouts).
    pub detect_hangs: bool,
    pub token: Option<String>,
    /// The address its hello gives ("" for none: the admin then shows the connection's).
    pub address: String,
}

impl FakeWorkerSpec {
    /// A worker that detects and executes `job_type` with `slots` execution slots,
    /// proposes nothing and succeeds at everything.
    pub fn new(worker_id: &str, job_type: &str, slots: i32) -> Self {
        let mut descriptors = HashMap::new();
        descriptors.insert(job_type.to_string(), simple_descriptor(job_type));
        FakeWorkerSpec {
            worker_id: worker_id.to_string(),
            capabilities: vec![pb::JobTypeCapability {
                job_type: job_type.to_string(),
                can_detect: true,
                can_execute: true,
                max_detection_concurrency: 1,
                max_execution_concurrency: slots,
                display_name: job_type.to_string(),
                ..Default::default()
            }],
            descriptors,
            detect: Arc::new(|_| Vec::new()),
            exec: Arc::new(|_| Exec::Succeed(vec![50.0])),
            heartbeat: true,
            heartbeat_every: None,
            detect_hangs: false,
            token: None,
            address: "127.0.0.1:0".into(),
        }
    }

    /// Says hello with this address ("" for none).
    pub fn address(mut self, address: &str) -> Self {
        self.address = address.to_string();
        self
    }

    /// Heartbeats every `period`, ignoring the advertised interval.
    pub fn heartbeat_every(mut self, period: Duration) -> Self {
        self.heartbeat_every = Some(period);
        self
    }

    pub fn executor_only(mut self) -> Self {
        for c in &mut self.capabilities {
            c.can_detect = false;
        }
        self
    }

    pub fn detect(
        mut self,
        f: impl Fn(&pb::RunDetectionRequest) -> Vec<Vec<pb::JobProposal>> + Send + Sync + 'static,
    ) -> Self {
        self.detect = Arc::new(f);
        self
    }

    pub fn exec(mut self, f: impl Fn(&pb::ExecuteJobRequest) -> Exec + Send + Sync + 'static) -> Self {
        self.exec = Arc::new(f);
        self
    }
}

/// A descriptor with one admin field and runtime defaults suited to tests.
pub fn simple_descriptor(job_type: &str) -> pb::JobTypeDescriptor {
    let field = pb::ConfigField {
        name: "threshold".into(),
        label: "Threshold".into(),
        field_type: pb::ConfigFieldType::Int64 as i32,
        widget: pb::ConfigWidget::Number as i32,
        min_value: Some(int(0)),
        max_value: Some(int(100)),
        ..Default::default()
    };
    let mut defaults = HashMap::new();
    defaults.insert("threshold".to_string(), int(10));
    pb::JobTypeDescriptor {
        job_type: job_type.into(),
        display_name: format!("Test {job_type}"),
        description: "a job type for tests".into(),
        descriptor_version: 1,
        admin_config_form: Some(pb::ConfigForm {
            form_id: "admin".into(),
            title: "Admin".into(),
            sections: vec![pb::ConfigSection {
                section_id: "main".into(),
                title: "Main".into(),
                fields: vec![field],
                ..Default::default()
            }],
            default_values: defaults,
            ..Default::default()
        }),
        admin_runtime_defaults: Some(pb::AdminRuntimeDefaults {
            enabled: true,
            detection_interval_minutes: 60,
            detection_timeout_seconds: 30,
            max_jobs_per_detection: 1000,
            global_execution_concurrency: 100,
            per_worker_execution_concurrency: 0,
            retry_limit: 2,
            retry_backoff_seconds: 0,
            job_type_max_runtime_seconds: 0,
            execution_timeout_seconds: 60,
        }),
        ..Default::default()
    }
}

pub fn int(v: i64) -> pb::ConfigValue {
    pb::ConfigValue { kind: Some(pb::config_value::Kind::Int64Value(v)) }
}

pub fn proposal(key: &str) -> pb::JobProposal {
    pb::JobProposal {
        proposal_id: format!("p-{key}"),
        dedupe_key: key.into(),
        summary: format!("job for {key}"),
        priority: pb::JobPriority::Normal as i32,
        ..Default::default()
    }
}

/// Everything the worker received, in order, with a notification on each arrival.
#[derive(Default)]
pub struct Inbox {
    messages: Mutex<Vec<pb::AdminToWorkerMessage>>,
    changed: Notify,
}

impl Inbox {
    pub fn all(&self) -> Vec<pb::AdminToWorkerMessage> {
        self.messages.lock().unwrap().clone()
    }

    pub fn executions(&self) -> Vec<pb::ExecuteJobRequest> {
        self.all()
            .into_iter()
            .filter_map(|m| match m.body {
                Some(AdminBody::ExecuteJobRequest(e)) => Some(e),
                _ => None,
            })
            .collect()
    }

    pub fn detections(&self) -> Vec<pb::RunDetectionRequest> {
        self.all()
            .into_iter()
            .filter_map(|m| match m.body {
                Some(AdminBody::RunDetectionRequest(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    pub fn cancels(&self) -> Vec<pb::CancelRequest> {
        self.all()
            .into_iter()
            .filter_map(|m| match m.body {
                Some(AdminBody::CancelRequest(c)) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Waits until a received message satisfies `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&pb::AdminToWorkerMessage) -> bool,
    ) -> pb::AdminToWorkerMessage {
        crate::within(what, deadline, async {
            loop {
                let notified = self.changed.notified();
                if let Some(m) = self.messages.lock().unwrap().iter().find(|m| pred(m)).cloned() {
                    return m;
                }
                notified.await;
            }
        })
        .await
    }

    fn push(&self, m: pb::AdminToWorkerMessage) {
        self.messages.lock().unwrap().push(m);
        self.changed.notify_waiters();
    }
}

pub struct FakeWorker {
    pub worker_id: String,
    pub inbox: Arc<Inbox>,
    pub hello: pb::AdminHello,
    /// Heartbeats sent so far.
    pub heartbeats: Arc<AtomicUsize>,
    stop: CancellationToken,
    stall: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Opens a raw stream: returns the sender for worker messages and the admin's stream.
pub async fn open_stream(
    grpc: SocketAddr,
    token: Option<&str>,
) -> Result<(mpsc::Sender<pb::WorkerToAdminMessage>, tonic::Streaming<pb::AdminToWorkerMessage>), tonic::Status> {
    let mut client = PluginControlServiceClient::connect(format!("http://{grpc}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel(256);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("token metadata"));
    }
    let resp = client.worker_stream(req).await?;
    Ok((tx, resp.into_inner()))
}

pub fn envelope(worker_id: &str, body: Body) -> pb::WorkerToAdminMessage {
    pb::WorkerToAdminMessage { worker_id: worker_id.into(), sent_at: Some(proto::now()), body: Some(body) }
}

impl FakeWorker {
    /// Connects, says hello and waits for the admin's answer.
    pub async fn start(grpc: SocketAddr, spec: FakeWorkerSpec) -> FakeWorker {
        let (tx, mut inbound) = open_stream(grpc, spec.token.as_deref()).await.expect("open worker stream");
        let hello = pb::WorkerHello {
            worker_id: spec.worker_id.clone(),
            worker_instance_id: format!("{}-instance", spec.worker_id),
            address: spec.address.clone(),
            worker_version: "test".into(),
            protocol_version: proto::PROTOCOL_VERSION.into(),
            capabilities: spec.capabilities.clone(),
            metadata: HashMap::new(),
        };
        tx.send(envelope(&spec.worker_id, Body::Hello(hello))).await.expect("send hello");
        let first = crate::within("admin hello", Duration::from_secs(10), inbound.message())
            .await
            .expect("admin stream")
            .expect("admin hello message");
        let admin_hello = match first.body {
            Some(AdminBody::Hello(h)) => h,
            other => panic!("expected AdminHello, got {other:?}"),
        };
        let inbox = Arc::new(Inbox::default());
        let stop = CancellationToken::new();
        let stall = CancellationToken::new();
        let heartbeats = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(
            spec.clone(),
            Link { tx, inbound },
            inbox.clone(),
            admin_hello.clone(),
            heartbeats.clone(),
            stop.clone(),
            stall.clone(),
        ));
        FakeWorker { worker_id: spec.worker_id, inbox, hello: admin_hello, heartbeats, stop, stall, task }
    }

    /// Drops the stream at once, as a crashed worker would.
    pub fn kill(&self) {
        self.stop.cancel();
        self.task.abort();
    }

    /// Stops reading and heartbeating but keeps the connection open ("connected but deaf").
    pub fn stall(&self) {
        self.stall.cancel();
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The stream's two halves.
struct Link {
    tx: mpsc::Sender<pb::WorkerToAdminMessage>,
    inbound: tonic::Streaming<pb::AdminToWorkerMessage>,
}

async fn run(
    spec: FakeWorkerSpec,
    link: Link,
    inbox: Arc<Inbox>,
    hello: pb::AdminHello,
    heartbeats: Arc<AtomicUsize>,
    stop: CancellationToken,
    stall: CancellationToken,
) {
    let Link { tx, mut inbound } = link;
    let id = spec.worker_id.clone();
    let send = |body: Body| {
        let tx = tx.clone();
        let id = id.clone();
        async move {
            let _ = tx.send(envelope(&id, body)).await;
        }
    };
    let mut hb = match spec.heartbeat_every {
        Some(period) => tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        None => tokio::time::interval(Duration::from_secs(hello.heartbeat_interval_seconds.max(1) as u64)),
    };
    // request_id -> (job_id, job_type) of executions waiting for a cancel.
    let mut hanging: HashMap<String, (String, String)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = stall.cancelled() => {
                // Keep the stream objects alive but never touch them again.
                let _keep = (tx, inbound);
                std::future::pending::<()>().await;
                return;
            }
            _ = hb.tick(), if spec.heartbeat => {
                send(Body::Heartbeat(pb::WorkerHeartbeat {
                    worker_id: id.clone(),
                    execution_slots_used: hanging.len() as i32,
                    execution_slots_total: spec.capabilities.iter().map(|c| c.max_execution_concurrency).sum(),
                    ..Default::default()
                })).await;
                heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            msg = inbound.message() => {
                let Ok(Some(msg)) = msg else { return };
                inbox.push(msg.clone());
                let request_id = msg.request_id.clone();
                match msg.body {
                    Some(AdminBody::RequestConfigSchema(r)) => {
                        let d = spec.descriptors.get(&r.job_type).cloned();
                        send(Body::ConfigSchemaResponse(pb::ConfigSchemaResponse {
                            request_id,
                            job_type: r.job_type.clone(),
                            success: d.is_some(),
                            error_message: if d.is_some() { String::new() } else { format!("unknown job type {}", r.job_type) },
                            job_type_descriptor: d,
                        })).await;
                    }
                    Some(AdminBody::RunDetectionRequest(_)) if spec.detect_hangs => {}
                    Some(AdminBody::RunDetectionRequest(r)) => {
                        let batches = (spec.detect)(&r);
                        let total: usize = batches.iter().map(Vec::len).sum();
                        let n = batches.len();
                        for (i, b) in batches.into_iter().enumerate() {
                            send(Body::DetectionProposals(pb::DetectionProposals {
                                request_id: request_id.clone(),
                                job_type: r.job_type.clone(),
                                proposals: b,
                                has_more: i + 1 < n,
                            })).await;
                        }
                        send(Body::DetectionComplete(pb::DetectionComplete {
                            request_id,
                            job_type: r.job_type.clone(),
                            success: true,
                            total_proposals: total as i32,
                            ..Default::default()
                        })).await;
                    }
                    Some(AdminBody::ExecuteJobRequest(r)) => {
                        let job = r.job.clone().unwrap_or_default();
                        let progress = |pct: f64, state: pb::JobState| Body::JobProgressUpdate(pb::JobProgressUpdate {
                            request_id: request_id.clone(),
                            job_id: job.job_id.clone(),
                            job_type: job.job_type.clone(),
                            state: state as i32,
                            progress_percent: pct,
                            stage: "work".into(),
                            ..Default::default()
                        });
                        let done = |success: bool, error: &str| Body::JobCompleted(pb::JobCompleted {
                            request_id: request_id.clone(),
                            job_id: job.job_id.clone(),
                            job_type: job.job_type.clone(),
                            success,
                            error_message: error.to_string(),
                            result: success.then(|| pb::JobResult { summary: "done".into(), ..Default::default() }),
                            ..Default::default()
                        });
                        match (spec.exec)(&r) {
                            Exec::Succeed(steps) => {
                                for p in steps {
                                    send(progress(p, pb::JobState::Running)).await;
                                }
                                send(done(true, "")).await;
                            }
                            Exec::Fail(e) => send(done(false, &e)).await,
                            Exec::AtCapacity => send(done(false, "executor is at capacity")).await,
                            Exec::HangUntilCancel => {
                                send(progress(10.0, pb::JobState::Running)).await;
                                hanging.insert(request_id.clone(), (job.job_id.clone(), job.job_type.clone()));
                            }
                            Exec::Ignore => send(progress(10.0, pb::JobState::Running)).await,
                        }
                    }
                    Some(AdminBody::CancelRequest(c)) => {
                        if let Some((job_id, job_type)) = hanging.remove(&c.target_id) {
                            send(Body::JobCompleted(pb::JobCompleted {
                                request_id: c.target_id.clone(),
                                job_id,
                                job_type,
                                success: false,
                                error_message: format!("canceled: {}", c.reason),
                                ..Default::default()
                            })).await;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
