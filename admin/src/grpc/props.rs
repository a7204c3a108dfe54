//! Property tests of the stream message handling: arbitrary sequences of worker messages
//! (acknowledgements, progress, completions, proposals, detection and schema replies,
//! heartbeats, junk) with request and job ids that are current, stale, another worker's
//! or made up, interleaved with dispatch and scheduler passes, time passing, operators'
//! stops and retries and streams that end, go through the admin's real components (the
//! same `handle` the gRPC service calls; a manual clock; a real store in a temp dir).
//! No step panics, and after every step the job table agrees with itself: the counts
//! match the jobs' states, no job is both active and final, attempts are never negative
//! nor more than the job's attempts overall, every job out on a worker holds a current
//! request within that worker's slots, and no two active jobs share a dedupe key. At
//! the end the store holds every job as memory does.

use std::collections::{HashMap, HashSet};

use proptest::{collection::vec, prelude::*, sample::select};
use proto::pb::{self, JobState, admin_to_worker_message::Body as Request, worker_to_admin_message::Body};

use super::handle;
use crate::{
    dispatcher::NewJob,
    job::{JobSpecData, is_final, job_id},
    proptest_support::{config, text},
    test_support::{Rig, TestWorker},
};

/// The workers: id and execution slots.
const WORKERS: &[(&str, i32)] = &[("w0", 2), ("w1", 1)];
/// Dedupe keys, few so that proposals and admissions collide.
const KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4"];

/// An id in a message: one the admin handed out (counted from the newest), or not.
#[derive(Debug, Clone)]
enum Id {
    Known(usize),
    Made(String),
    Empty,
}

#[derive(Debug, Clone)]
enum Message {
    Nothing,
    Hello,
    Heartbeat,
    Observations,
    Preview,
    Ack { request: Id, accepted: bool, message: String },
    Progress { request: Id, job: Id, percent: f64, stage: String, message: String, activities: usize },
    Completed { request: Id, job: Id, success: bool, error: String, result: bool, activities: usize },
    Proposals { request: Id, job_type: String, keys: Vec<String>, priority: i32, times: (Option<i64>, Option<i64>) },
    DetectionDone { request: Id, success: bool, total: i32, error: String },
    Schema { request: Id, success: bool, retry_limit: i32 },
}

#[derive(Debug, Clone)]
enum Step {
    Admit(Vec<String>),
    Dispatch,
    Schedule,
    Advance(i64),
    Send { worker: usize, message: Message },
    StreamEnds { worker: usize },
    Stop { job: usize, expire: bool },
    Retry { job: usize },
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![8 => (0usize..6).prop_map(Id::Known), 1 => text().prop_map(Id::Made), 1 => Just(Id::Empty)]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![6 => select(KEYS).prop_map(String::from), 1 => text()]
}

fn error() -> impl Strategy<Value = String> {
    const KNOWN: &[&str] =
        &["", "executor is at capacity", " executor is at capacity\n", "worker is shutting down", "boom"];
    prop_oneof![3 => select(KNOWN).prop_map(String::from), 1 => text()]
}

/// A time relative to the rig's start, or any at all.
fn time() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![3 => Just(None), 2 => (-10_000i64..200_000).prop_map(Some), 1 => any::<i64>().prop_map(Some)]
}

fn message() -> impl Strategy<Value = Message> {
    let percent = prop_oneof![0.0f64..100.0, any::<f64>(), select(&[f64::NAN, f64::INFINITY, -1.0][..])];
    let job_type = prop_oneof![4 => Just("t".to_string()), 1 => Just(String::new()), 1 => text()];
    prop_oneof![
        1 => Just(Message::Nothing),
        1 => Just(Message::Hello),
        1 => Just(Message::Heartbeat),
        1 => Just(Message::Observations),
        1 => Just(Message::Preview),
        3 => (id(), any::<bool>(), error())
            .prop_map(|(request, accepted, message)| Message::Ack { request, accepted, message }),
        6 => (id(), id(), percent, text(), text(), 0usize..3).prop_map(
            |(request, job, percent, stage, message, activities)| Message::Progress {
                request, job, percent, stage, message, activities,
            }
        ),
        8 => (id(), id(), any::<bool>(), error(), any::<bool>(), 0usize..2).prop_map(
            |(request, job, success, error, result, activities)| Message::Completed {
                request, job, success, error, result, activities,
            }
        ),
        4 => (id(), job_type, vec(key(), 0..4), -2i32..6, (time(), time())).prop_map(
            |(request, job_type, keys, priority, times)| Message::Proposals { request, job_type, keys, priority, times }
        ),
        3 => (id(), any::<bool>(), -1i32..5, error())
            .prop_map(|(request, success, total, error)| Message::DetectionDone { request, success, total, error }),
        1 => (id(), any::<bool>(), -1i32..3)
            .prop_map(|(request, success, retry_limit)| Message::Schema { request, success, retry_limit }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => vec(key(), 1..4).prop_map(Step::Admit),
        4 => Just(Step::Dispatch),
        2 => Just(Step::Schedule),
        2 => prop_oneof![0i64..2_000, 0i64..120_000].prop_map(Step::Advance),
        14 => (0..WORKERS.len(), message()).prop_map(|(worker, message)| Step::Send { worker, message }),
        1 => (0..WORKERS.len()).prop_map(|worker| Step::StreamEnds { worker }),
        1 => (0usize..12, any::<bool>()).prop_map(|(job, expire)| Step::Stop { job, expire }),
        1 => (0usize..12).prop_map(|job| Step::Retry { job }),
    ]
}

/// The rig, its connected workers, and the ids the admin handed out so far.
struct World {
    rig: Rig,
    workers: Vec<TestWorker>,
    executions: Vec<String>,
    detections: Vec<String>,
    schemas: Vec<String>,
    requests: Vec<String>,
    jobs: i64,
}

fn pick(list: &[String], id: &Id) -> String {
    match id {
        Id::Known(i) if !list.is_empty() => list[list.len() - 1 - i % list.len()].clone(),
        Id::Known(_) | Id::Empty => String::new(),
        Id::Made(s) => s.clone(),
    }
}

fn timestamp(offset: Option<i64>) -> Option<pb::Timestamp> {
    offset.map(|o| {
        let ms = Rig::T0.saturating_add(o);
        pb::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
    })
}

fn activities(n: usize) -> Vec<pb::ActivityEvent> {
    (0..n).map(|i| pb::ActivityEvent { message: format!("activity {i}"), ..Default::default() }).collect()
}

impl World {
    fn new() -> World {
        let rig = Rig::new(|d| {
            d.retry_limit = 1;
            d.retry_backoff_seconds = 1;
            d.global_execution_concurrency = 2;
        });
        let mut world = World {
            rig,
            workers: Vec::new(),
            executions: Vec::new(),
            detections: Vec::new(),
            schemas: Vec::new(),
            requests: Vec::new(),
            jobs: 0,
        };
        for i in 0..WORKERS.len() {
            let w = world.connect(i);
            world.workers.push(w);
        }
        world
    }

    fn connect(&self, i: usize) -> TestWorker {
        let (id, slots) = WORKERS[i];
        let w = self.rig.worker(id, slots);
        self.rig.c.schemas.on_hello(&w.session);
        w
    }

    /// Records what the admin sent each worker.
    fn drain(&mut self) {
        for w in &mut self.workers {
            while let Ok(Ok(m)) = w.rx.try_recv() {
                let of_body = match &m.body {
                    Some(Request::ExecuteJobRequest(r)) => Some((&mut self.executions, &r.request_id)),
                    Some(Request::RunDetectionRequest(r)) => Some((&mut self.detections, &r.request_id)),
                    Some(Request::RequestConfigSchema(_)) => Some((&mut self.schemas, &m.request_id)),
                    _ => None,
                };
                let id = if m.request_id.is_empty() { of_body.as_ref().map(|b| b.1.clone()) } else { None }
                    .unwrap_or_else(|| m.request_id.clone());
                if let Some((list, _)) = of_body {
                    list.push(id.clone());
                }
                self.requests.push(id);
            }
        }
    }

    /// Lets the jobs whose writes are durable into the dispatch queues.
    async fn settle(&self) {
        self.rig.c.store.settle().await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    fn job_ref(&self, id: &Id) -> String {
        match id {
            Id::Known(i) if self.jobs > 0 => job_id(self.jobs - (*i as i64 % self.jobs)),
            Id::Known(_) | Id::Empty => String::new(),
            Id::Made(s) => s.clone(),
        }
    }

    fn seq(&self, i: usize) -> i64 {
        if self.jobs == 0 { 1 } else { self.jobs - (i as i64 % self.jobs) }
    }

    async fn apply(&mut self, step: Step) {
        let c = self.rig.c.clone();
        match step {
            Step::Admit(keys) => {
                let jobs = keys.into_iter().map(|k| NewJob { spec: spec(&k) }).collect();
                c.dispatcher.admit(jobs, 100);
                self.settle().await;
            }
            Step::Dispatch => {
                c.dispatcher.dispatch_pass();
            }
            Step::Schedule => {
                c.scheduler.scheduler_pass();
            }
            Step::Advance(ms) => {
                self.rig.clock.advance(ms);
                c.dispatcher.check_deadlines();
            }
            Step::Send { worker, message } => {
                let proposals = matches!(message, Message::Proposals { .. });
                let body = self.body(worker, message);
                let session = self.workers[worker].session.clone();
                let envelope = pb::WorkerToAdminMessage { worker_id: session.worker_id.clone(), sent_at: None, body };
                let warn = crate::throttle::Throttle::new(5, std::time::Duration::from_secs(10));
                handle(&c, &session, &warn, envelope).await;
                if proposals {
                    self.settle().await;
                }
            }
            Step::StreamEnds { worker } => {
                // What the stream task does when a stream ends, then the worker dials again.
                let s = self.workers[worker].session.clone();
                let reason = "stream closed by the worker";
                let lost = c.registry.remove_if_current(&s.worker_id, s.session_id);
                c.dispatcher.on_worker_gone(&s.worker_id, s.session_id, reason);
                c.scheduler.on_detector_gone(&s.worker_id, s.session_id, lost, reason);
                c.schemas.expire_schema_requests(Some((&s.worker_id, s.session_id)));
                self.workers[worker] = self.connect(worker);
            }
            Step::Stop { job, expire } => {
                let outcome = if expire { JobState::Failed } else { JobState::Canceled };
                let _ = c.dispatcher.stop_job(self.seq(job), outcome, "stopped by operator");
            }
            Step::Retry { job } => {
                let _ = c.dispatcher.retry_job(self.seq(job));
                self.settle().await;
            }
        }
        self.drain();
    }

    fn body(&self, worker: usize, message: Message) -> Option<Body> {
        Some(match message {
            Message::Nothing => return None,
            Message::Hello => {
                Body::Hello(pb::WorkerHello { worker_id: WORKERS[worker].0.into(), ..Default::default() })
            }
            Message::Heartbeat => Body::Heartbeat(pb::WorkerHeartbeat {
                running_work: self
                    .executions
                    .iter()
                    .rev()
                    .take(2)
                    .map(|id| pb::RunningWork { work_id: id.clone(), ..Default::default() })
                    .collect(),
                ..Default::default()
            }),
            Message::Observations => Body::Observations(Default::default()),
            Message::Preview => Body::ObjectPreviewResponse(Default::default()),
            Message::Ack { request, accepted, message } => Body::Acknowledge(pb::WorkerAcknowledge {
                request_id: pick(&self.requests, &request),
                accepted,
                message,
            }),
            Message::Progress { request, job, percent, stage, message, activities: n } => {
                Body::JobProgressUpdate(pb::JobProgressUpdate {
                    request_id: pick(&self.executions, &request),
                    job_id: self.job_ref(&job),
                    job_type: "t".into(),
                    state: JobState::Running as i32,
                    progress_percent: percent,
                    stage,
                    message,
                    activities: activities(n),
                    ..Default::default()
                })
            }
            Message::Completed { request, job, success, error, result, activities: n } => {
                Body::JobCompleted(pb::JobCompleted {
                    request_id: pick(&self.executions, &request),
                    job_id: self.job_ref(&job),
                    job_type: "t".into(),
                    success,
                    error_message: error,
                    result: result.then(|| pb::JobResult { summary: "done".into(), ..Default::default() }),
                    activities: activities(n),
                    ..Default::default()
                })
            }
            Message::Proposals { request, job_type, keys, priority, times } => {
                Body::DetectionProposals(pb::DetectionProposals {
                    request_id: pick(&self.detections, &request),
                    job_type: job_type.clone(),
                    proposals: keys
                        .into_iter()
                        .map(|k| pb::JobProposal {
                            proposal_id: format!("p-{k}"),
                            dedupe_key: k,
                            job_type: job_type.clone(),
                            priority,
                            not_before: timestamp(times.0),
                            expires_at: timestamp(times.1),
                            ..Default::default()
                        })
                        .collect(),
                    has_more: true,
                })
            }
            Message::DetectionDone { request, success, total, error } => {
                Body::DetectionComplete(pb::DetectionComplete {
                    request_id: pick(&self.detections, &request),
                    job_type: "t".into(),
                    success,
                    error_message: error,
                    total_proposals: total,
                })
            }
            Message::Schema { request, success, retry_limit } => Body::ConfigSchemaResponse(pb::ConfigSchemaResponse {
                request_id: pick(&self.schemas, &request),
                job_type: "t".into(),
                success,
                error_message: String::new(),
                job_type_descriptor: Some(pb::JobTypeDescriptor {
                    job_type: "t".into(),
                    descriptor_version: 2,
                    admin_runtime_defaults: Some(pb::AdminRuntimeDefaults {
                        enabled: true,
                        retry_limit,
                        execution_timeout_seconds: 30,
                        max_jobs_per_detection: 3,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
        })
    }

    /// The job table's invariants, over every job so far (all are in memory or the store).
    fn check(&mut self) -> Result<(), TestCaseError> {
        let d = &self.rig.c.dispatcher;
        let mut counts: HashMap<(String, JobState), i64> = HashMap::new();
        let (mut active, mut out) = (0usize, 0usize);
        let mut per_worker: HashMap<String, i32> = HashMap::new();
        let mut keys = HashSet::new();
        let mut seq = 1;
        while let Some(job) = d.job(seq) {
            let id = job.id();
            prop_assert_ne!(job.state, JobState::Unspecified, "{}", id);
            prop_assert!(0 <= job.attempts && job.attempts <= job.attempts_total, "{}: attempts {:?}", id, job);
            prop_assert!((0.0..=100.0).contains(&job.progress), "{}: progress {}", id, job.progress);
            *counts.entry((job.spec.job_type.clone(), job.state)).or_default() += 1;
            if is_final(job.state) {
                prop_assert!(job.completed_at > 0, "{} is final without an end", id);
                prop_assert!(
                    job.request_id.is_empty() || !d.is_execution(&job.request_id),
                    "{} is final but still holds its request",
                    id
                );
            } else {
                active += 1;
                prop_assert!(
                    keys.insert((job.spec.job_type.clone(), job.spec.dedupe_key.clone())),
                    "two active jobs hold {}'s dedupe key",
                    id
                );
            }
            if matches!(job.state, JobState::Assigned | JobState::Running) {
                out += 1;
                prop_assert!(d.is_execution(&job.request_id), "{} is out without a current request", id);
                *per_worker.entry(String::from(&*job.worker_id)).or_default() += 1;
            }
            seq += 1;
        }
        self.jobs = seq - 1;
        let mut table: HashMap<(String, JobState), i64> = HashMap::new();
        for ((job_type, state), n) in d.counts() {
            if n != 0 {
                table.insert((job_type, state), n);
            }
        }
        prop_assert_eq!(table, counts, "the counts follow the jobs' states");
        prop_assert_eq!(d.active_len(), active, "active jobs are the jobs that are not final");
        prop_assert_eq!(d.in_flight(), out, "jobs in flight are the assigned and running ones");
        for (worker, n) in per_worker {
            let slots = WORKERS.iter().find(|w| w.0 == worker).map_or(0, |w| w.1);
            prop_assert!(n <= slots, "{} has {} jobs for {} slots", worker, n, slots);
        }
        Ok(())
    }
}

fn spec(key: &str) -> JobSpecData {
    JobSpecData {
        replay_of: 0,
        cluster_context: None,
        job_type: "t".into(),
        dedupe_key: key.into(),
        priority: pb::JobPriority::Normal as i32,
        summary: format!("job {key}").into(),
        detail: Box::default(),
        parameters: Default::default(),
        labels: Default::default(),
        created_at: Rig::T0,
        not_before: 0,
        expires_at: 0,
        detection_run: 0,
    }
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut world = World::new();
    let mut result = Ok(());
    for step in steps {
        world.apply(step).await;
        result = world.check();
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = stored_as_in_memory(&world).await;
    }
    world.rig.c.store.close();
    result
}

/// Every change that must be stored reached the store: once it settles, each job there is
/// as in memory, except that a job whose attempt is in flight (no stop pending) is stored
/// as it was before that attempt: PENDING, the attempt not counted.
async fn stored_as_in_memory(world: &World) -> Result<(), TestCaseError> {
    let c = &world.rig.c;
    c.store.settle().await;
    for seq in 1..=world.jobs {
        let memory = c.dispatcher.job(seq).expect("every job so far");
        let stored = c.store.job(seq).expect("the store answers");
        prop_assert!(stored.is_some(), "{} is not in the store", memory.id());
        let stored = stored.unwrap();
        if memory.must_be_stored() {
            let fields = |j: &crate::job::Job| (j.state, j.attempts, j.attempts_total, j.dead_letter, j.error.clone());
            prop_assert_eq!(fields(&stored), fields(&memory), "{} in the store and in memory", memory.id());
        } else {
            let fields = |j: &crate::job::Job| (j.state, j.attempts, j.attempts_total, j.dead_letter);
            prop_assert_eq!(
                fields(&stored),
                (JobState::Pending, memory.attempts - 1, memory.attempts_total - 1, false),
                "{} in flight: the store holds it as before the attempt",
                memory.id()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn any_sequence_of_worker_messages_keeps_the_job_table_consistent(steps in vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
        runtime.block_on(run(steps))?;
    }
}
