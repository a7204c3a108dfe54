//! DetectorScheduler: when each job type detects, which worker detects (a sticky lease
//! while that worker stays healthy), and turning proposals into deduplicated jobs.
//!
//! Three kinds of detection: scheduled (every `detection_interval_minutes` while the job
//! type is enabled; the first soon after a capable worker appears), `run` (on demand;
//! creates jobs like a scheduled one) and `detect` (on demand, a preview: proposals are
//! shown as the latest detection results and no job is created).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::pb::{self, admin_to_worker_message::Body};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    clock::SharedClock,
    cluster_context::ClusterContextSource,
    config::InputLimits,
    config_store::ConfigStore,
    dispatcher::{Admission, Dispatcher, NewJob},
    events::EventKind,
    holds::{HoldKind, Holds},
    ids::Ids,
    input,
    job::{JobSpecData, RunView, priority_name, timestamp_to_ms},
    journal::Journal,
    monitor::{Monitor, inc},
    registry::{Registry, WorkerSession},
    schedules::Schedules,
    store::{Op, Store},
    text::clip,
    wire,
};

/// Proposals kept per job type as its latest detection results.
const LATEST_PROPOSALS: usize = 200;

/// Proposals a preview reports to a caller waiting for it (beyond them, only counts).
const REPORTED_PROPOSALS: usize = 1000;

/// What a caller waiting for an on-demand detection learns when it ends.
#[derive(Debug, Clone)]
pub struct DetectionReport {
    pub mode: DetectionMode,
    pub request_id: String,
    pub worker_id: String,
    /// The run as recorded: success, message, proposals seen, jobs created.
    pub run: RunView,
    /// A preview's valid proposals as the worker sent them, at most 1,000.
    pub proposals: Vec<pb::JobProposal>,
    /// The jobs a run created.
    pub created_jobs: Vec<String>,
    pub deduplicated: i64,
    pub over_limit: i64,
    pub invalid: i64,
}

/// Receives the report of the detection that served an on-demand request; its value
/// stays `None` until then, and the sender is dropped if the request never runs (a hold
/// dropped it, the admin stopped).
pub type DetectionWatch = watch::Receiver<Option<Arc<DetectionReport>>>;
type DetectionWaiter = watch::Sender<Option<Arc<DetectionReport>>>;

/// The longest timeout a caller may give a preview detection, and a run's detection (the
/// bounds SeaweedFS's admin puts on its detect and run requests).
pub const MAX_PREVIEW_TIMEOUT_SECONDS: u32 = 5 * 60;
pub const MAX_RUN_TIMEOUT_SECONDS: u32 = 30 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DetectionMode {
    Scheduled,
    Run,
    Preview,
}

/// A caller's options for one on-demand detection (the body of SeaweedFS's detect and run
/// requests). The default is a detection like a scheduled one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectOptions {
    /// Over the admin's cluster context for this detection and the jobs it creates (each
    /// list wins when non-empty, metadata merges: [`crate::cluster_context::merge`]); the
    /// jobs keep it (`JobSpecData::cluster_context`) and execute with it.
    pub cluster_context: Option<pb::ClusterContext>,
    /// Caps the jobs this detection creates (and the worker's `max_results`); never above
    /// the admin's per-detection ceiling.
    pub max_results: Option<u32>,
    /// This detection's timeout, at most [`MAX_PREVIEW_TIMEOUT_SECONDS`] for a preview and
    /// [`MAX_RUN_TIMEOUT_SECONDS`] for a run.
    pub timeout_seconds: Option<u32>,
}

impl DetectOptions {
    /// The options for the audit trail: only those given.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if let Some(c) = &self.cluster_context {
            out.insert("cluster_context".into(), proto::json::to_value(c).unwrap_or(serde_json::Value::Null));
        }
        if let Some(n) = self.max_results {
            out.insert("max_results".into(), n.into());
        }
        if let Some(n) = self.timeout_seconds {
            out.insert("timeout_seconds".into(), n.into());
        }
        serde_json::Value::Object(out)
    }

    /// The detection's timeout: the caller's, bounded for the mode, else the runtime's.
    pub fn effective_timeout_seconds(&self, mode: DetectionMode, runtime: &pb::AdminRuntimeConfig) -> i64 {
        let bound = if mode == DetectionMode::Preview { MAX_PREVIEW_TIMEOUT_SECONDS } else { MAX_RUN_TIMEOUT_SECONDS };
        match self.timeout_seconds.filter(|s| *s > 0) {
            Some(s) => i64::from(s.min(bound)),
            None => i64::from(runtime.detection_timeout_seconds.max(1)),
        }
    }
}

/// What the scheduler needs from the rest of the admin.
pub struct SchedulerParts {
    pub registry: Arc<Registry>,
    pub configs: Arc<ConfigStore>,
    pub dispatcher: Dispatcher,
    pub store: Arc<Store>,
    pub journal: Journal,
    pub monitor: Arc<Monitor>,
    pub clock: SharedClock,
    pub ids: Arc<Ids>,
    /// Detection holds and the global pause of schedules.
    pub holds: Holds,
    /// Cron schedules; a type without one detects on its interval.
    pub schedules: Schedules,
    /// Delay between a job type's first capable detector appearing and its first detection.
    pub first_detection_delay: Duration,
    pub send_timeout: Duration,
    /// Read for each detection request (a snapshot: an `Arc` clone).
    pub cluster_context: Arc<ClusterContextSource>,
    /// Cancelled when the admin begins to stop: no new detections.
    pub stopping: CancellationToken,
    /// Bounds on proposals: each one's size, and jobs per detection whatever the descriptor says.
    pub limits: InputLimits,
}

/// A handle to the detection scheduler; clones share it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<SchedulerInner>,
}

struct SchedulerInner {
    table: Mutex<DetectorTable>,
    wake: Notify,
    parts: SchedulerParts,
}

#[derive(Default)]
struct DetectorTable {
    types: HashMap<String, DetectorState>,
    by_request: HashMap<String, String>,
}

#[derive(Default)]
struct DetectorState {
    /// When the next interval detection is due (0: not yet scheduled). A type with a cron
    /// schedule asks [`Schedules::next_fire`] instead.
    next_due: i64,
    /// When the last scheduled detection started (0: none since the admin started).
    last_scheduled_at: i64,
    lease: Option<String>,
    running: Option<RunningDetection>,
    sequence: i64,
    last_success_at: i64,
    last_run: Option<RunView>,
    latest: Vec<ProposalView>,
    /// An on-demand request that arrived while a detection was running, with its options.
    queued: Option<(DetectionMode, DetectOptions)>,
    /// The callers waiting for the queued request.
    queued_waiters: Vec<DetectionWaiter>,
}

struct RunningDetection {
    request_id: String,
    worker_id: String,
    session_id: u64,
    mode: DetectionMode,
    /// The caller's options, kept to run it again if its detector is lost.
    options: DetectOptions,
    run: RunView,
    deadline: i64,
    timeout_secs: i64,
    max_jobs: i64,
    deduplicated: i64,
    dropped: i64,
    /// Proposals refused for being over an input limit, and the first one's reason.
    invalid: i64,
    first_invalid: String,
    /// Callers waiting for this detection's report; what it reports to them.
    waiters: Vec<DetectionWaiter>,
    reported: Vec<pb::JobProposal>,
    created_jobs: Vec<String>,
}

/// A proposal as the pages show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProposalView {
    pub proposal_id: String,
    pub dedupe_key: String,
    pub priority: &'static str,
    pub summary: String,
    pub detail: String,
    /// created, deduplicated, over_limit, preview or invalid
    pub outcome: &'static str,
    pub job_id: String,
    /// Why an invalid proposal was refused.
    pub reason: String,
}

/// The scheduler's view of one job type, for the API and the pages.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStateView {
    pub job_type: String,
    pub enabled: bool,
    pub detector_worker_id: String,
    pub detection_running: bool,
    pub running_mode: Option<DetectionMode>,
    pub next_detection_at: i64,
    pub detection_interval_minutes: i32,
    pub last_success_at: i64,
    pub last_run: Option<RunView>,
    pub detectors: usize,
    pub executors: usize,
}

/// Why an on-demand detection could not start.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no descriptor for job type {0:?} yet")]
    UnknownJobType(String),
    #[error("no connected worker can detect {0:?}")]
    NoDetector(String),
    #[error("the admin is shutting down")]
    ShuttingDown,
}

impl Scheduler {
    pub fn new(parts: SchedulerParts) -> Scheduler {
        Scheduler {
            inner: Arc::new(SchedulerInner { table: Mutex::new(DetectorTable::default()), wake: Notify::new(), parts }),
        }
    }

    fn p(&self) -> &SchedulerParts {
        &self.inner.parts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DetectorTable> {
        self.inner.table.lock().expect("detector lock")
    }

    fn now(&self) -> i64 {
        self.p().clock.now_ms()
    }

    fn is_stopping(&self) -> bool {
        self.p().stopping.is_cancelled()
    }

    /// Asks for a scheduler pass now (a new descriptor, config or worker).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs scheduler passes until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let next = self.scheduler_pass();
            let wait = (next - self.now()).clamp(10, 1000) as u64;
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = stop.cancelled() => break,
            }
        }
    }

    /// Starts due detections and times out overdue ones. Returns the next time it has
    /// something to do.
    pub fn scheduler_pass(&self) -> i64 {
        let now = self.now();
        let mut next = now + 1000;
        if self.is_stopping() {
            return next;
        }
        let mut job_types: Vec<String> = self.p().configs.job_types();
        for t in self.p().registry.job_types().into_keys() {
            if !job_types.contains(&t) {
                job_types.push(t);
            }
        }
        let mut out: Vec<(Arc<WorkerSession>, pb::AdminToWorkerMessage)> = Vec::new();
        {
            let mut d = self.lock();
            for job_type in job_types {
                if self.p().configs.descriptor(&job_type).is_none() {
                    continue;
                }
                let runtime = self.p().configs.runtime(&job_type);
                let detectors = self.p().registry.detectors(&job_type);
                let st = d.types.entry(job_type.clone()).or_default();
                if let Some(r) = &st.running {
                    if r.deadline <= now {
                        let request_id = r.request_id.clone();
                        let secs = r.timeout_secs;
                        if let Some(s) = self.p().registry.get(&r.worker_id) {
                            out.push((
                                s,
                                wire::cancel(
                                    &self.p().ids.request("cancel"),
                                    pb::WorkKind::Detection,
                                    &request_id,
                                    "detection timed out",
                                ),
                            ));
                        }
                        self.end_detection(&mut d, &job_type, false, &format!("detection timed out after {secs} s"), 0);
                        continue;
                    }
                    next = next.min(r.deadline);
                    continue;
                }
                if detectors.is_empty() {
                    continue;
                }
                if st.next_due == 0 {
                    st.next_due = now + self.p().first_detection_delay.as_millis() as i64;
                }
                let held = self.p().holds.is_held(HoldKind::Detection, &job_type);
                let scheduled = runtime.enabled && !held && !self.p().holds.schedules_paused();
                let due = self.p().schedules.next_fire(&job_type).unwrap_or(st.next_due);
                let waiters = std::mem::take(&mut st.queued_waiters);
                let mode = match st.queued.take() {
                    // An on-demand request queued before the hold was set is dropped
                    // (and its waiters learn so when their senders drop).
                    Some(_) if held => None,
                    Some(queued) => Some(queued),
                    None if scheduled && due <= now => Some((DetectionMode::Scheduled, DetectOptions::default())),
                    None => None,
                };
                match mode {
                    Some((mode, options)) => {
                        if mode == DetectionMode::Scheduled {
                            self.mark_scheduled(st, &job_type, now);
                        }
                        let start = Start { mode, options, runtime: &runtime, detectors: &detectors, now, waiters };
                        if let Some(msg) = self.start_detection(&mut d, &job_type, start) {
                            out.push(msg);
                        }
                    }
                    None if scheduled => next = next.min(due),
                    None => {}
                }
            }
        }
        for (s, msg) in out {
            s.send(msg, self.p().send_timeout);
        }
        next
    }

    /// Notes that a scheduled detection starts now; a cron schedule remembers it durably,
    /// so that after a restart it fires once for the slots it missed, not once per slot.
    fn mark_scheduled(&self, st: &mut DetectorState, job_type: &str, now: i64) {
        st.last_scheduled_at = now;
        if self.p().schedules.get(job_type).is_some() {
            self.p().schedules.fired(job_type, now);
            self.p().store.write(Op::ScheduleFired { job_type: job_type.to_string(), at: now });
        }
    }

    /// When a job type's last scheduled detection started and when its next interval
    /// detection is due (0: unknown).
    pub fn scheduled_times(&self, job_type: &str) -> (i64, i64) {
        self.lock().types.get(job_type).map(|s| (s.last_scheduled_at, s.next_due)).unwrap_or((0, 0))
    }

    /// A job type's schedule changed: an interval counts from now, a cron schedule from
    /// its own slots.
    pub fn reschedule(&self, job_type: &str) {
        let interval = i64::from(self.p().configs.runtime(job_type).detection_interval_minutes.max(1)) * 60_000;
        let now = self.now();
        if let Some(st) = self.lock().types.get_mut(job_type) {
            st.next_due = now + interval;
        }
        self.wake();
    }

    fn start_detection(
        &self,
        d: &mut DetectorTable,
        job_type: &str,
        start: Start<'_>,
    ) -> Option<(Arc<WorkerSession>, pb::AdminToWorkerMessage)> {
        let Start { mode, options, runtime, detectors, now, waiters } = start;
        let st = d.types.get_mut(job_type)?;
        // Sticky lease: keep the same detector while it is connected and not draining.
        let worker = st
            .lease
            .as_ref()
            .and_then(|w| detectors.iter().find(|s| &s.worker_id == w))
            .or_else(|| detectors.iter().min_by_key(|s| (s.worker_id.len(), s.worker_id.clone())))?
            .clone();
        st.lease = Some(worker.worker_id.clone());
        st.sequence += 1;
        let request_id = self.p().ids.request("detect");
        let config = self.p().configs.config(job_type);
        // The descriptor (the worker's own word) cannot raise this above the admin's ceiling.
        let ceiling = i64::try_from(self.p().limits.max_proposals_per_detection).unwrap_or(i64::MAX).max(1);
        let asked = options.max_results.filter(|n| *n > 0).map(i64::from);
        let max_jobs = asked.unwrap_or(i64::from(runtime.max_jobs_per_detection.max(1))).min(ceiling);
        let admin_context = self.p().cluster_context.current();
        let cluster_context = match &options.cluster_context {
            Some(given) => crate::cluster_context::merge(given, &admin_context),
            None => admin_context.as_ref().clone(),
        };
        let timeout_secs = options.effective_timeout_seconds(mode, runtime);
        // The worker sees the timeout this detection really has.
        let admin_runtime = pb::AdminRuntimeConfig {
            detection_timeout_seconds: i32::try_from(timeout_secs).unwrap_or(i32::MAX),
            ..*runtime
        };
        let request = pb::RunDetectionRequest {
            request_id: request_id.clone(),
            job_type: job_type.to_string(),
            detection_sequence: st.sequence,
            admin_runtime: Some(admin_runtime),
            admin_config_values: config.as_ref().map(|c| c.admin_config_values.clone()).unwrap_or_default(),
            worker_config_values: config.as_ref().map(|c| c.worker_config_values.clone()).unwrap_or_default(),
            cluster_context: Some(cluster_context),
            last_successful_run: (st.last_success_at > 0).then(|| crate::job::ms_to_timestamp(st.last_success_at)),
            max_results: max_jobs as i32,
        };
        let run = RunView {
            id: self.p().ids.run(),
            job_type: job_type.to_string(),
            kind: match mode {
                DetectionMode::Preview => "detection_preview".into(),
                _ => "detection".into(),
            },
            job_id: String::new(),
            worker_id: worker.worker_id.clone(),
            started_at: now,
            ended_at: 0,
            success: false,
            message: String::new(),
            proposals: 0,
            jobs_created: 0,
        };
        self.p().store.submit(
            Some(Op::Run(Box::new(run.clone()))),
            Some(EventKind::DetectionStarted {
                job_type: job_type.to_string(),
                run_id: run.id,
                worker_id: worker.worker_id.clone(),
            }),
        );
        st.latest.clear();
        st.running = Some(RunningDetection {
            request_id: request_id.clone(),
            worker_id: worker.worker_id.clone(),
            session_id: worker.session_id,
            mode,
            options,
            run,
            deadline: now + timeout_secs * 1000,
            timeout_secs,
            max_jobs,
            deduplicated: 0,
            dropped: 0,
            invalid: 0,
            first_invalid: String::new(),
            waiters,
            reported: Vec::new(),
            created_jobs: Vec::new(),
        });
        d.by_request.insert(request_id.clone(), job_type.to_string());
        inc(&self.p().monitor.detections_started);
        let msg = wire::envelope(&request_id, Body::RunDetectionRequest(request));
        Some((worker, msg))
    }

    /// Finishes the running detection of a job type and schedules the next one.
    fn end_detection(&self, d: &mut DetectorTable, job_type: &str, success: bool, message: &str, reported: i64) {
        let now = self.now();
        let runtime = self.p().configs.runtime(job_type);
        let Some(st) = d.types.get_mut(job_type) else { return };
        let Some(mut r) = st.running.take() else { return };
        d.by_request.remove(&r.request_id);
        r.run.ended_at = now;
        r.run.success = success;
        r.run.proposals = r.run.proposals.max(reported);
        let mut msg = clip(message, 2000);
        if r.deduplicated > 0 || r.dropped > 0 {
            let extra = format!("{} deduplicated, {} over the per-detection limit", r.deduplicated, r.dropped);
            msg = if msg.is_empty() { extra } else { format!("{msg}; {extra}") };
        }
        if r.invalid > 0 {
            let extra = format!("{} refused as invalid (the first: {})", r.invalid, r.first_invalid);
            msg = if msg.is_empty() { extra } else { format!("{msg}; {extra}") };
        }
        r.run.message = msg;
        self.p().monitor.detection_duration.observe((now - r.run.started_at).max(0) as f64 / 1000.0);
        if success {
            st.last_success_at = now;
        } else {
            inc(&self.p().monitor.detections_failed);
        }
        if r.mode == DetectionMode::Scheduled || st.next_due <= now {
            st.next_due = now + i64::from(runtime.detection_interval_minutes.max(1)) * 60_000;
        }
        st.last_run = Some(r.run.clone());
        if !r.waiters.is_empty() {
            let report = Arc::new(DetectionReport {
                mode: r.mode,
                request_id: r.request_id.clone(),
                worker_id: r.worker_id.clone(),
                run: r.run.clone(),
                proposals: std::mem::take(&mut r.reported),
                created_jobs: std::mem::take(&mut r.created_jobs),
                deduplicated: r.deduplicated,
                over_limit: r.dropped,
                invalid: r.invalid,
            });
            for w in r.waiters.drain(..) {
                let _ = w.send(Some(report.clone()));
            }
        }
        let summary = if success {
            format!(
                "detection found {}, created {}",
                crate::text::plural(r.run.proposals, "proposal"),
                crate::text::plural(r.run.jobs_created, "job")
            )
        } else {
            format!("detection failed: {}", r.run.message)
        };
        let run = Box::new(r.run);
        self.p().store.submit(Some(Op::Run(run.clone())), Some(EventKind::DetectionFinished { run }));
        self.p().journal.record(job_type, "", pb::ActivitySource::Admin, "detection", &summary);
        self.wake();
    }

    /// Runs a detection now: `Run` creates jobs, `Preview` only shows proposals. If one is
    /// running, this one follows it (returns true); a queued run is not replaced by a
    /// preview, anything else is replaced with its options.
    pub fn request_detection(
        &self,
        job_type: &str,
        mode: DetectionMode,
        options: DetectOptions,
    ) -> Result<(bool, DetectionWatch), DetectError> {
        if self.is_stopping() {
            return Err(DetectError::ShuttingDown);
        }
        if self.p().configs.descriptor(job_type).is_none() {
            return Err(DetectError::UnknownJobType(job_type.to_string()));
        }
        if self.p().registry.detectors(job_type).is_empty() {
            return Err(DetectError::NoDetector(job_type.to_string()));
        }
        let mut d = self.lock();
        let st = d.types.entry(job_type.to_string()).or_default();
        let queued = st.running.is_some();
        let keep_queued_run = matches!(st.queued, Some((DetectionMode::Run, _))) && mode != DetectionMode::Run;
        if !keep_queued_run {
            st.queued = Some((mode, options));
        }
        let (waiter, watch) = watch::channel(None);
        st.queued_waiters.push(waiter);
        drop(d);
        self.wake();
        Ok((queued, watch))
    }

    fn running_of(&self, d: &DetectorTable, session: &WorkerSession, request_id: &str) -> Option<String> {
        let job_type = d.by_request.get(request_id)?;
        let r = d.types.get(job_type)?.running.as_ref()?;
        (r.worker_id == session.worker_id).then(|| job_type.clone())
    }

    pub fn is_detection(&self, request_id: &str) -> bool {
        self.lock().by_request.contains_key(request_id)
    }

    /// The job type of a detection this worker is running (for its activities: the job
    /// type comes from the admin's own record, not from the worker's message).
    pub fn detection_job_type(&self, session: &WorkerSession, request_id: &str) -> Option<String> {
        let d = self.lock();
        self.running_of(&d, session, request_id)
    }

    /// Turns a batch of proposals into jobs (through the dispatcher's one way in), or,
    /// for a preview, only shows them. A proposal over an input limit is shown as invalid
    /// with its reason and never stored; returns how many were, and the first reason.
    pub fn on_proposals(&self, session: &WorkerSession, batch: pb::DetectionProposals) -> Option<(usize, String)> {
        let now = self.now();
        let mut d = self.lock();
        let Some(job_type) = self.running_of(&d, session, &batch.request_id) else {
            drop(d);
            inc(&self.p().monitor.ignored_messages);
            tracing::debug!(worker_id = %session.worker_id, request_id = %clip(&batch.request_id, 64), "proposals for an unknown detection ignored");
            return None;
        };
        let st = d.types.get_mut(&job_type).expect("running detection has state");
        let r = st.running.as_mut().expect("running detection");
        let waited_for = r.waiters.iter().any(|w| !w.is_closed());
        let mut views = Vec::with_capacity(batch.proposals.len().min(LATEST_PROPOSALS));
        let mut offered = Vec::new();
        let (mut invalid, mut first_invalid) = (0, None);
        // The jobs of a run asked with a cluster context execute with it too.
        let context = r.options.cluster_context.clone().map(Arc::new);
        for p in batch.proposals {
            r.run.proposals += 1;
            let mut view = ProposalView {
                proposal_id: clip(&p.proposal_id, 256),
                dedupe_key: clip(&p.dedupe_key, 512),
                priority: priority_name(p.priority),
                summary: clip(&p.summary, 1000),
                detail: clip(&p.detail, 4000),
                outcome: "preview",
                job_id: String::new(),
                reason: String::new(),
            };
            let key = if !p.dedupe_key.is_empty() { clip(&p.dedupe_key, 512) } else { clip(&p.proposal_id, 512) };
            let refusal = if !p.job_type.is_empty() && p.job_type != job_type {
                Some(format!("the proposal is for job type {}", input::shown(&p.job_type)))
            } else {
                input::check_proposal(&p, &self.p().limits).err()
            };
            if let Some(reason) = refusal {
                view.outcome = "invalid";
                r.invalid += 1;
                invalid += 1;
                if r.first_invalid.is_empty() {
                    r.first_invalid = clip(&reason, 300);
                }
                view.reason = reason.clone();
                first_invalid.get_or_insert(reason);
            } else if r.mode == DetectionMode::Preview {
                if !key.is_empty() && self.p().dispatcher.is_active_key(&job_type, &key) {
                    view.outcome = "deduplicated";
                }
                if waited_for && r.reported.len() < REPORTED_PROPOSALS {
                    r.reported.push(p);
                }
            } else {
                let spec =
                    JobSpecData { cluster_context: context.clone(), ..new_spec(&job_type, key, p, r.run.id, now) };
                offered.push((views.len(), NewJob { spec }));
            }
            views.push(view);
        }
        if !offered.is_empty() {
            let (at, jobs): (Vec<usize>, Vec<NewJob>) = offered.into_iter().unzip();
            let admitted = self.p().dispatcher.admit(jobs, r.max_jobs - r.run.jobs_created);
            for (i, admission) in at.into_iter().zip(admitted) {
                let view = &mut views[i];
                match admission {
                    Admission::Created { job_id } => {
                        view.outcome = "created";
                        if waited_for {
                            r.created_jobs.push(job_id.clone());
                        }
                        view.job_id = job_id;
                        r.run.jobs_created += 1;
                    }
                    Admission::Duplicate => {
                        r.deduplicated += 1;
                        view.outcome = "deduplicated";
                    }
                    Admission::OverLimit => {
                        r.dropped += 1;
                        view.outcome = "over_limit";
                    }
                }
            }
        }
        let room = LATEST_PROPOSALS.saturating_sub(st.latest.len());
        st.latest.extend(views.into_iter().take(room));
        first_invalid.map(|reason| (invalid, reason))
    }

    pub fn on_detection_complete(&self, session: &WorkerSession, done: pb::DetectionComplete) {
        let mut d = self.lock();
        let Some(job_type) = self.running_of(&d, session, &done.request_id) else {
            drop(d);
            inc(&self.p().monitor.ignored_messages);
            return;
        };
        let message = if done.success {
            String::new()
        } else if done.error_message.is_empty() {
            "detector reported failure".into()
        } else {
            done.error_message.clone()
        };
        self.end_detection(&mut d, &job_type, done.success, &message, i64::from(done.total_proposals.max(0)));
    }

    /// A detector refused the request (acknowledge with accepted: false).
    pub fn on_detection_rejected(&self, session: &WorkerSession, request_id: &str, message: &str) {
        let mut d = self.lock();
        if let Some(job_type) = self.running_of(&d, session, request_id) {
            let msg = if message.is_empty() {
                "rejected by the detector".to_string()
            } else {
                format!("rejected by the detector: {message}")
            };
            self.end_detection(&mut d, &job_type, false, &msg, 0);
        }
    }

    /// Detections sent on a stream that ended fail and run again soon (elsewhere, if the
    /// worker is gone for good: `lost` also releases its detector leases).
    pub fn on_detector_gone(&self, worker_id: &str, session_id: u64, lost: bool, reason: &str) {
        let mut d = self.lock();
        let affected: Vec<String> = d
            .types
            .iter()
            .filter(|(_, st)| {
                st.running.as_ref().is_some_and(|r| r.worker_id == worker_id && r.session_id == session_id)
            })
            .map(|(t, _)| t.clone())
            .collect();
        for job_type in affected {
            let running = d.types.get_mut(&job_type).and_then(|s| s.running.as_mut());
            let again = running.map(|r| ((r.mode, r.options.clone()), std::mem::take(&mut r.waiters)));
            self.end_detection(&mut d, &job_type, false, &format!("detector lost: {reason}"), 0);
            if let Some(st) = d.types.get_mut(&job_type) {
                st.next_due = self.now();
                // An on-demand detection runs again, and its callers wait for that one.
                if let Some((again @ (mode, _), waiters)) = again
                    && mode != DetectionMode::Scheduled
                {
                    st.queued = Some(again);
                    st.queued_waiters.extend(waiters);
                }
            }
        }
        if lost {
            for st in d.types.values_mut() {
                if st.lease.as_deref() == Some(worker_id) {
                    st.lease = None;
                }
            }
        }
        drop(d);
        self.wake();
    }

    pub fn scheduler_states(&self) -> Vec<SchedulerStateView> {
        let mut types = self.p().configs.job_types();
        for t in self.p().registry.job_types().into_keys() {
            if !types.contains(&t) {
                types.push(t);
            }
        }
        types.sort();
        let d = self.lock();
        types
            .into_iter()
            .map(|job_type| {
                let runtime = self.p().configs.runtime(&job_type);
                let st = d.types.get(&job_type);
                SchedulerStateView {
                    enabled: runtime.enabled,
                    detector_worker_id: st.and_then(|s| s.lease.clone()).unwrap_or_default(),
                    detection_running: st.is_some_and(|s| s.running.is_some()),
                    running_mode: st.and_then(|s| s.running.as_ref().map(|r| r.mode)),
                    next_detection_at: st.map(|s| s.next_due).unwrap_or(0),
                    detection_interval_minutes: runtime.detection_interval_minutes,
                    last_success_at: st.map(|s| s.last_success_at).unwrap_or(0),
                    last_run: st.and_then(|s| s.last_run.clone()),
                    detectors: self.p().registry.detectors(&job_type).len(),
                    executors: self.p().registry.executors(&job_type).len(),
                    job_type,
                }
            })
            .collect()
    }

    pub fn latest_proposals(&self, job_type: &str) -> Vec<ProposalView> {
        self.lock().types.get(job_type).map(|s| s.latest.clone()).unwrap_or_default()
    }
}

/// What one detection starts with.
struct Start<'a> {
    mode: DetectionMode,
    options: DetectOptions,
    runtime: &'a pb::AdminRuntimeConfig,
    detectors: &'a [Arc<WorkerSession>],
    now: i64,
    /// The callers waiting for this detection (an on-demand one).
    waiters: Vec<DetectionWaiter>,
}

pub(crate) fn new_spec(job_type: &str, dedupe_key: String, p: pb::JobProposal, run_id: i64, now: i64) -> JobSpecData {
    let not_before = p.not_before.as_ref().map(timestamp_to_ms).unwrap_or(0).max(0);
    let expires_at = p.expires_at.as_ref().map(timestamp_to_ms).unwrap_or(0).max(0);
    let priority = if p.priority == 0 { pb::JobPriority::Normal as i32 } else { p.priority.clamp(0, 4) };
    JobSpecData {
        replay_of: 0,
        job_type: job_type.to_string(),
        dedupe_key: dedupe_key.into(),
        priority,
        summary: clip(&p.summary, 1000).into(),
        detail: clip(&p.detail, 8000).into(),
        parameters: p.parameters.into(),
        labels: p.labels.into(),
        created_at: now,
        not_before,
        expires_at,
        detection_run: run_id,
        cluster_context: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Rig;

    #[tokio::test]
    async fn a_detection_that_runs_past_its_timeout_is_canceled_and_recorded_as_failed() {
        let rig = Rig::new(|d| d.detection_timeout_seconds = 45);
        let mut w = rig.worker("w1", 1);
        let s = &rig.c.scheduler;
        assert!(
            !s.request_detection("t", DetectionMode::Run, DetectOptions::default()).unwrap().0,
            "started, not queued"
        );
        s.scheduler_pass();
        let request_id = match w.next().await.body {
            Some(Body::RunDetectionRequest(r)) => r.request_id,
            other => panic!("expected a detection request, got {other:?}"),
        };
        rig.clock.advance(44_999);
        s.scheduler_pass();
        assert!(s.is_detection(&request_id), "still running before the timeout");
        rig.clock.advance(1);
        s.scheduler_pass();
        match w.next().await.body {
            Some(Body::CancelRequest(c)) => {
                assert_eq!(c.target_id, request_id);
                assert_eq!(c.target_kind, pb::WorkKind::Detection as i32);
            }
            other => panic!("expected a cancel, got {other:?}"),
        }
        assert!(!s.is_detection(&request_id));
        let state = s.scheduler_states().into_iter().find(|st| st.job_type == "t").unwrap();
        let run = state.last_run.expect("the run is recorded");
        assert!(!run.success);
        assert_eq!(run.message, "detection timed out after 45 s");
        assert_eq!(state.next_detection_at, Rig::T0 + 45_000 + 10 * 60_000, "the next one is an interval later");
    }

    #[tokio::test]
    async fn proposals_become_jobs_through_the_dispatcher_deduplicated_and_capped() {
        let rig = Rig::new(|d| d.max_jobs_per_detection = 2);
        let mut w = rig.worker("w1", 1);
        let s = &rig.c.scheduler;
        s.request_detection("t", DetectionMode::Run, DetectOptions::default()).unwrap();
        s.scheduler_pass();
        let Some(Body::RunDetectionRequest(r)) = w.next().await.body else { panic!("no detection request") };
        let proposal = |key: &str| pb::JobProposal { dedupe_key: key.into(), ..Default::default() };
        let batch = pb::DetectionProposals {
            request_id: r.request_id.clone(),
            proposals: vec![proposal("a"), proposal("a"), proposal("b"), proposal("c")],
            ..Default::default()
        };
        s.on_proposals(&w.session, batch);
        let outcomes: Vec<&str> = s.latest_proposals("t").iter().map(|p| p.outcome).collect();
        assert_eq!(outcomes, vec!["created", "deduplicated", "created", "over_limit"]);
        assert!(rig.c.dispatcher.is_active_key("t", "a"));
        assert_eq!(rig.c.dispatcher.count_of("t", pb::JobState::Pending), 2);
    }

    fn detection(msg: pb::AdminToWorkerMessage) -> pb::RunDetectionRequest {
        match msg.body {
            Some(Body::RunDetectionRequest(r)) => r,
            other => panic!("expected a detection request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_detections_options_set_its_context_cap_and_timeout_and_follow_it_when_requeued() {
        let rig = Rig::with_config(
            |d| d.max_jobs_per_detection = 100,
            |c| {
                c.master_addresses = vec!["admin-m:9333".into()];
                c.filer_addresses = vec!["admin-f:8888".into()];
                c.limits.max_proposals_per_detection = 10;
            },
        );
        let mut w = rig.worker("w1", 1);
        let s = &rig.c.scheduler;
        let options = DetectOptions {
            cluster_context: Some(pb::ClusterContext {
                master_grpc_addresses: vec!["own-m:9333".into()],
                ..Default::default()
            }),
            max_results: Some(50),
            timeout_seconds: Some(MAX_RUN_TIMEOUT_SECONDS + 1),
        };
        s.request_detection("t", DetectionMode::Run, options.clone()).unwrap();
        // A preview asked for while a run is queued does not replace it.
        s.request_detection("t", DetectionMode::Preview, DetectOptions::default()).unwrap();
        s.scheduler_pass();
        let r = detection(w.next().await);
        let c = r.cluster_context.unwrap();
        assert_eq!(c.master_grpc_addresses, vec!["own-m:9333".to_string()]);
        assert_eq!(c.filer_addresses, vec!["admin-f:8888".to_string()], "the admin's fills the rest");
        assert_eq!(r.max_results, 10, "capped at the admin's ceiling");
        let timeout = r.admin_runtime.unwrap().detection_timeout_seconds;
        assert_eq!(timeout, MAX_RUN_TIMEOUT_SECONDS as i32, "bounded");

        // The detector is lost: the run is asked again of the next one, with its options.
        s.on_detector_gone("w1", w.session.session_id, true, "gone");
        rig.c.registry.remove_if_current("w1", w.session.session_id);
        let mut w2 = rig.worker("w2", 1);
        s.scheduler_pass();
        let again = detection(w2.next().await);
        assert_eq!(again.cluster_context.unwrap().master_grpc_addresses, vec!["own-m:9333".to_string()]);
        rig.clock.advance(i64::from(MAX_RUN_TIMEOUT_SECONDS) * 1000);
        s.scheduler_pass();
        let state = s.scheduler_states().into_iter().find(|st| st.job_type == "t").unwrap();
        let message = state.last_run.unwrap().message;
        assert_eq!(message, format!("detection timed out after {MAX_RUN_TIMEOUT_SECONDS} s"));

        // The next one has the admin's context and the job type's own limits.
        s.request_detection("t", DetectionMode::Preview, DetectOptions::default()).unwrap();
        s.scheduler_pass();
        let plain = loop {
            match w2.next().await.body {
                Some(Body::RunDetectionRequest(r)) => break r,
                _ => continue,
            }
        };
        assert_eq!(plain.cluster_context.unwrap().master_grpc_addresses, vec!["admin-m:9333".to_string()]);
        assert_eq!(plain.max_results, 10);
        assert_eq!(plain.admin_runtime.unwrap().detection_timeout_seconds, 60);
    }
}
