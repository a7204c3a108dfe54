//! The admin API over gRPC: `plughost.admin.v1.AdminService` (`proto/proto/admin.proto`),
//! served on the worker listener beside `plugin.PluginControlService`, with the standard
//! health service (`health.rs`) and server reflection of both services.
//!
//! It is a translator, like the JSON API: every method identifies its caller first
//! (`caller.rs`, the HTTP side's tokens and certificate identities), bounds what the
//! caller sent, reads through the components or the JSON API's own request functions
//! (`http::api`: the same filters, limits, cursors and refusals), and makes every change
//! through [`Components::execute`], so the role checks, approvals and the audit trail are
//! the command layer's. Answers are typed messages (`messages.rs`), refusals gRPC codes
//! with the JSON API's messages (`status.rs`), and `WatchEvents` is the event bus with
//! resume from an event id (`watch.rs`).

mod caller;
pub mod health;
mod messages;
mod status;
mod watch;

use std::sync::Arc;

use proto::{
    admin_pb::{self as api, admin_service_server::AdminService},
    pb,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use self::{
    caller::{identify, reply, with_request_id},
    status::{refusal, status, too_long},
};
use crate::{
    commands::{Caller, Command, Outcome, ReplayFilter},
    components::Components,
    http::{
        ApiError,
        api::{self as json_api, ConfigParts, JobsQuery},
        detection::{self, RunCounts, WaitError},
        governance::{AuditParams, may_read_audit},
    },
    job::{parse_job_id, state_name},
    scheduler::{DetectOptions, DetectionMode},
};

/// The largest request the admin API decodes: the JSON API's body limit.
pub const MAX_REQUEST_BYTES: usize = crate::http::MAX_BODY_BYTES;

pub struct AdminApi {
    state: Arc<Components>,
}

impl AdminApi {
    pub fn new(state: Arc<Components>) -> AdminApi {
        AdminApi { state }
    }

    /// Bounds what a caller sent before anything reads it: free text (filters, names,
    /// job types, lanes) as the input limits bound a worker's names, ids (job and worker
    /// ids) as they bound its ids.
    fn bound(&self, caller: &Caller, names: &[(&str, &str)], ids: &[(&str, &str)]) -> Result<(), Status> {
        let limits = &self.state.config.limits;
        let over = names
            .iter()
            .map(|(f, v)| (f, v, limits.max_name_bytes))
            .chain(ids.iter().map(|(f, v)| (f, v, limits.max_id_bytes)))
            .find(|(_, v, max)| v.len() > *max);
        match over {
            Some((field, _, max)) => Err(with_request_id(too_long(field, max), &caller.request_id)),
            None => Ok(()),
        }
    }

    /// Asks the command layer for a detection of `t` (Detect and Run share this), noting
    /// when, and how long its answers may take.
    async fn request_detection(
        &self,
        caller: &Caller,
        t: &str,
        mode: DetectionMode,
        options: DetectOptions,
    ) -> Result<Requested, Status> {
        self.bound(caller, &[("job_type", t)], &[])?;
        json_api::job_type_param(t).map_err(refused(caller))?;
        let started = Instant::now();
        let limit = detection::wait_limit(&self.state, t, mode, &options);
        let command = Command::Detect { job_type: t.to_string(), mode, options };
        let Outcome::DetectionRequested { queued, report } = self.execute(caller, command).await? else {
            return Err(refused(caller)(other_outcome(if mode == DetectionMode::Run { "run" } else { "detect" })));
        };
        Ok(Requested { queued, report, started, limit })
    }

    async fn execute(&self, caller: &Caller, command: Command) -> Result<Outcome, Status> {
        self.state.execute(caller, command).await.map_err(|e| with_request_id(refusal(e), &caller.request_id))
    }
}

/// A refusal with the caller's request id.
fn refused(caller: &Caller) -> impl Fn(ApiError) -> Status + '_ {
    move |e| with_request_id(status(e), &caller.request_id)
}

fn other_outcome(command: &str) -> ApiError {
    ApiError::Internal(format!("{command} gave another outcome"))
}

/// A count where 0 means "the default".
fn given(n: u32) -> Option<usize> {
    (n > 0).then_some(n as usize)
}

fn ms(ts: Option<&pb::Timestamp>) -> Option<i64> {
    ts.map(crate::job::timestamp_to_ms)
}

/// Non-empty text, trimmed.
fn text(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|v| !v.is_empty())
}

/// The parts of a config a `PutConfig` replaces: those its mask names, else those set.
fn config_parts(
    config: &pb::PersistedJobTypeConfig,
    mask: Option<&prost_types::FieldMask>,
) -> Result<ConfigParts, Status> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        return Ok(ConfigParts {
            admin_config_values: !config.admin_config_values.is_empty(),
            worker_config_values: !config.worker_config_values.is_empty(),
            admin_runtime: config.admin_runtime.is_some(),
        });
    };
    let mut parts = ConfigParts::default();
    for path in &mask.paths {
        match path.as_str() {
            "admin_config_values" => parts.admin_config_values = true,
            "worker_config_values" => parts.worker_config_values = true,
            "admin_runtime" => parts.admin_runtime = true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "update_mask names {:?}; use admin_config_values, worker_config_values or admin_runtime",
                    crate::text::clip(other, 64)
                )));
            }
        }
    }
    Ok(parts)
}

/// A detection's options from a detect or run request (0 is "the job type's own").
/// A detection the command layer accepted: whether it was queued behind another, its
/// report to come, when it was asked for and how long its answers may take.
struct Requested {
    queued: bool,
    report: crate::scheduler::DetectionWatch,
    started: Instant,
    limit: detection::WaitLimit,
}

fn detect_options(
    cluster_context: Option<pb::ClusterContext>,
    max_results: u32,
    timeout_seconds: u32,
) -> DetectOptions {
    DetectOptions {
        cluster_context,
        max_results: (max_results > 0).then_some(max_results),
        timeout_seconds: (timeout_seconds > 0).then_some(timeout_seconds),
    }
}

/// The JSON API answers a detection that was not run 409 and one that did not finish in
/// time 504, with these messages.
fn wait_status(caller: &Caller, e: WaitError) -> Status {
    match e {
        WaitError::NotRun(m) => refused(caller)(ApiError::Conflict(m)),
        WaitError::TimedOut(m) => with_request_id(Status::deadline_exceeded(m), &caller.request_id),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type WatchEventsStream = watch::EventStream;

    async fn get_status(&self, request: Request<api::GetStatusRequest>) -> Result<Response<api::AdminStatus>, Status> {
        let caller = identify(&self.state, &request, "GetStatus")?;
        let s = &self.state;
        let mut jobs_by_state = std::collections::HashMap::new();
        for ((_, state), n) in s.dispatcher.counts() {
            *jobs_by_state.entry(state_name(state).to_string()).or_insert(0) += n;
        }
        let status = api::AdminStatus {
            version: crate::monitor::VERSION.into(),
            git_commit: crate::monitor::GIT_COMMIT.into(),
            protocol_version: proto::PROTOCOL_VERSION.into(),
            worker_grpc_port: u32::from(s.grpc_port()),
            base_dir: s.config.data_dir.join("plugin").display().to_string(),
            ready: s.is_ready(),
            store_healthy: s.store.is_healthy(),
            dispatch_paused: s.dispatcher.is_paused(),
            schedules_paused: s.holds.schedules_paused(),
            holds: s.holds.list().iter().map(messages::hold).collect(),
            dead_letters: s.store.dead_letters().map(|d| d.iter().map(|(_, n)| n).sum()).unwrap_or(0),
            worker_count: s.registry.len() as i64,
            job_type_count: s.configs.job_types().len() as i64,
            active_jobs: s.dispatcher.active_len() as i64,
            jobs_by_state,
            last_event_id: s.events.last_id(),
            cluster_context: Some(s.cluster_context.current().as_ref().clone()),
            cluster_context_file: s.cluster_context.file().map(|p| p.display().to_string()).unwrap_or_default(),
            cluster_context_error: s.cluster_context.last_error().unwrap_or_default(),
        };
        Ok(reply(&caller, status))
    }

    async fn list_workers(
        &self,
        request: Request<api::ListWorkersRequest>,
    ) -> Result<Response<api::ListWorkersResponse>, Status> {
        let caller = identify(&self.state, &request, "ListWorkers")?;
        self.bound(&caller, &[("lane", &request.get_ref().lane)], &[])?;
        let lane = json_api::lane_param(Some(&request.get_ref().lane)).map_err(refused(&caller))?;
        let workers = self
            .state
            .registry
            .views()
            .iter()
            .filter(|w| lane.is_none() || w.job_types.iter().any(|t| crate::http::shapes::in_lane(t, lane)))
            .map(messages::worker)
            .collect();
        Ok(reply(&caller, api::ListWorkersResponse { workers }))
    }

    async fn list_job_types(
        &self,
        request: Request<api::ListJobTypesRequest>,
    ) -> Result<Response<api::ListJobTypesResponse>, Status> {
        let caller = identify(&self.state, &request, "ListJobTypes")?;
        self.bound(&caller, &[("lane", &request.get_ref().lane)], &[])?;
        let lane = json_api::lane_param(Some(&request.get_ref().lane)).map_err(refused(&caller))?;
        let job_types = json_api::job_type_summaries(&self.state, lane).iter().map(messages::job_type).collect();
        Ok(reply(&caller, api::ListJobTypesResponse { job_types }))
    }

    async fn list_jobs(
        &self,
        request: Request<api::ListJobsRequest>,
    ) -> Result<Response<api::ListJobsResponse>, Status> {
        let caller = identify(&self.state, &request, "ListJobs")?;
        let r = request.get_ref();
        self.bound(
            &caller,
            &[("job_type", &r.job_type), ("lane", &r.lane), ("text", &r.text)],
            &[("before", &r.before)],
        )?;
        let state = match pb::JobState::try_from(r.state) {
            Ok(pb::JobState::Unspecified) => None,
            Ok(s) => Some(state_name(s).to_string()),
            Err(_) => return Err(refused(&caller)(ApiError::BadRequest(format!("unknown job state {}", r.state)))),
        };
        let query = JobsQuery {
            job_type: Some(r.job_type.clone()),
            lane: Some(r.lane.clone()),
            state,
            text: Some(r.text.clone()),
            dead_letter: r.dead_letter,
            before: Some(r.before.clone()),
            limit: given(r.limit),
        };
        let (jobs, next) = json_api::list_jobs(&self.state, &query).await.map_err(refused(&caller))?;
        let jobs = jobs.iter().map(messages::job).collect();
        Ok(reply(&caller, api::ListJobsResponse { jobs, next_before: next.unwrap_or_default() }))
    }

    async fn get_job(&self, request: Request<api::GetJobRequest>) -> Result<Response<api::JobDetail>, Status> {
        let caller = identify(&self.state, &request, "GetJob")?;
        let r = request.get_ref();
        self.bound(&caller, &[], &[("job_id", &r.job_id)])?;
        let parts = json_api::job_detail_parts(
            &self.state,
            &r.job_id,
            given(r.activity_limit),
            r.related_limit.map(|n| n as usize),
        )
        .await
        .map_err(refused(&caller))?;
        let detail = api::JobDetail {
            job: Some(messages::full_job(&parts.job)),
            attempts: parts.attempts.iter().map(messages::attempt).collect(),
            activities: parts.activities.iter().map(messages::activity).collect(),
            run_record: parts.run_record.as_ref().map(messages::run_record),
            related_jobs: parts.related.iter().map(messages::job).collect(),
            r#final: crate::job::is_final(parts.job.state),
        };
        Ok(reply(&caller, detail))
    }

    async fn list_activities(
        &self,
        request: Request<api::ListActivitiesRequest>,
    ) -> Result<Response<api::ListActivitiesResponse>, Status> {
        let caller = identify(&self.state, &request, "ListActivities")?;
        let r = request.get_ref();
        self.bound(&caller, &[("job_type", &r.job_type), ("lane", &r.lane)], &[("job_id", &r.job_id)])?;
        let before = (r.before > 0).then_some(r.before);
        let (list, next) = json_api::list_activities(
            &self.state,
            Some(&r.job_type),
            Some(&r.lane),
            Some(&r.job_id),
            before,
            given(r.limit),
        )
        .await
        .map_err(refused(&caller))?;
        let activities = list.iter().map(messages::activity).collect();
        Ok(reply(&caller, api::ListActivitiesResponse { activities, next_before: next.unwrap_or(0) }))
    }

    async fn get_config(
        &self,
        request: Request<api::GetConfigRequest>,
    ) -> Result<Response<api::JobTypeConfig>, Status> {
        let caller = identify(&self.state, &request, "GetConfig")?;
        let t = &request.get_ref().job_type;
        self.bound(&caller, &[("job_type", t)], &[])?;
        json_api::job_type_param(t).map_err(refused(&caller))?;
        let (descriptor, config) = json_api::redacted_config(&self.state, t).map_err(refused(&caller))?;
        Ok(reply(&caller, api::JobTypeConfig { descriptor: Some(descriptor.as_ref().clone()), config: Some(config) }))
    }

    async fn put_config(
        &self,
        request: Request<api::PutConfigRequest>,
    ) -> Result<Response<api::JobTypeConfig>, Status> {
        let caller = identify(&self.state, &request, "PutConfig")?;
        let r = request.into_inner();
        self.bound(&caller, &[("job_type", &r.job_type)], &[])?;
        let config = r.config.unwrap_or_default();
        let parts =
            config_parts(&config, r.update_mask.as_ref()).map_err(|s| with_request_id(s, &caller.request_id))?;
        let (descriptor, config) = json_api::save_config_parts(&self.state, &caller, &r.job_type, config, parts)
            .await
            .map_err(refused(&caller))?;
        Ok(reply(&caller, api::JobTypeConfig { descriptor: Some(descriptor.as_ref().clone()), config: Some(config) }))
    }

    async fn detect(&self, request: Request<api::DetectRequest>) -> Result<Response<api::DetectResponse>, Status> {
        let caller = identify(&self.state, &request, "Detect")?;
        let r = request.into_inner();
        let t = r.job_type;
        let options = detect_options(r.cluster_context, r.max_results, r.timeout_seconds);
        let Requested { queued, report, started, limit } =
            self.request_detection(&caller, &t, DetectionMode::Preview, options).await?;
        let mut answer = api::DetectResponse { job_type: t.clone(), queued, ..Default::default() };
        if r.no_wait {
            return Ok(reply(&caller, answer));
        }
        let report =
            detection::wait_report(&t, report, started + limit.detection).await.map_err(|e| wait_status(&caller, e))?;
        let activities = detection::detector_activities(&self.state, &t, &report).await.map_err(refused(&caller))?;
        answer.finished = true;
        answer.success = report.run.success;
        answer.error = if report.run.success { String::new() } else { report.run.message.clone() };
        answer.request_id = report.request_id.clone();
        answer.detector_worker_id = report.worker_id.clone();
        answer.total_proposals = report.run.proposals;
        answer.proposals = detection::sorted_proposals(&report);
        answer.activities = activities.iter().map(messages::activity).collect();
        answer.run = Some(messages::run_record(&report.run));
        Ok(reply(&caller, answer))
    }

    async fn run(&self, request: Request<api::RunRequest>) -> Result<Response<api::RunResponse>, Status> {
        let caller = identify(&self.state, &request, "Run")?;
        let r = request.into_inner();
        let t = r.job_type;
        let options = detect_options(r.cluster_context, r.max_results, r.timeout_seconds);
        let Requested { queued, report, started, limit } =
            self.request_detection(&caller, &t, DetectionMode::Run, options).await?;
        let mut answer = api::RunResponse { job_type: t.clone(), queued, ..Default::default() };
        if r.no_wait {
            return Ok(reply(&caller, answer));
        }
        let report =
            detection::wait_report(&t, report, started + limit.detection).await.map_err(|e| wait_status(&caller, e))?;
        answer.finished = true;
        answer.success = report.run.success;
        answer.request_id = report.request_id.clone();
        answer.detector_worker_id = report.worker_id.clone();
        answer.run = Some(messages::run_record(&report.run));
        if !report.run.success {
            answer.error = report.run.message.clone();
            return Ok(reply(&caller, answer));
        }
        let counts = RunCounts::of(&detection::run_jobs(&self.state, &report, started + limit.run).await);
        answer.detected_count = report.run.proposals;
        answer.ready_to_execute_count = report.created_jobs.len() as i64;
        answer.skipped_active_count = report.deduplicated;
        answer.executed_count = counts.executed() as i64;
        answer.success_count = counts.succeeded as i64;
        answer.error_count = counts.failed as i64;
        answer.canceled_count = counts.canceled as i64;
        answer.unfinished_count = counts.unfinished as i64;
        answer.over_limit_count = report.over_limit;
        answer.invalid_count = report.invalid;
        answer.job_ids = report.created_jobs.clone();
        Ok(reply(&caller, answer))
    }

    async fn cancel_job(&self, request: Request<api::CancelJobRequest>) -> Result<Response<api::JobResponse>, Status> {
        let caller = identify(&self.state, &request, "CancelJob")?;
        let r = request.get_ref();
        self.bound(&caller, &[], &[("job_id", &r.job_id)])?;
        let seq = json_api::job_seq(&r.job_id).map_err(refused(&caller))?;
        let reason = json_api::reason_or(Some(&r.reason), "canceled by operator");
        match self.execute(&caller, Command::CancelJob { seq, reason }).await? {
            Outcome::Job(view) => Ok(reply(&caller, api::JobResponse { job: Some(messages::job(&view)) })),
            _ => Err(refused(&caller)(other_outcome("cancel_job"))),
        }
    }

    async fn retry_job(&self, request: Request<api::RetryJobRequest>) -> Result<Response<api::JobResponse>, Status> {
        let caller = identify(&self.state, &request, "RetryJob")?;
        let r = request.get_ref();
        self.bound(&caller, &[], &[("job_id", &r.job_id)])?;
        let seq = json_api::job_seq(&r.job_id).map_err(refused(&caller))?;
        match self.execute(&caller, Command::RetryJob { seq }).await? {
            Outcome::Job(view) => Ok(reply(&caller, api::JobResponse { job: Some(messages::job(&view)) })),
            _ => Err(refused(&caller)(other_outcome("retry_job"))),
        }
    }

    /// As the JSON API answers: a job that is no longer active is `expired: false` with
    /// the reason (the refusal is in the audit trail), not an error.
    async fn expire_job(
        &self,
        request: Request<api::ExpireJobRequest>,
    ) -> Result<Response<api::ExpireJobResponse>, Status> {
        let caller = identify(&self.state, &request, "ExpireJob")?;
        let r = request.get_ref();
        self.bound(&caller, &[], &[("job_id", &r.job_id)])?;
        let seq = json_api::job_seq(&r.job_id).map_err(refused(&caller))?;
        let reason = json_api::reason_or(Some(&r.reason), "expired by operator");
        match self.state.execute(&caller, Command::ExpireJob { seq, reason }).await.map_err(ApiError::from) {
            Ok(Outcome::Job(view)) => Ok(reply(
                &caller,
                api::ExpireJobResponse { expired: true, reason: String::new(), job: Some(messages::job(&view)) },
            )),
            Ok(_) => Err(refused(&caller)(other_outcome("expire_job"))),
            Err(ApiError::Conflict(reason)) => {
                let job = self
                    .state
                    .dispatcher
                    .job(seq)
                    .ok_or_else(|| refused(&caller)(ApiError::NotFound(format!("no job {:?}", r.job_id))))?;
                Ok(reply(
                    &caller,
                    api::ExpireJobResponse { expired: false, reason, job: Some(messages::job(&job.view())) },
                ))
            }
            Err(e) => Err(refused(&caller)(e)),
        }
    }

    async fn drain_worker(
        &self,
        request: Request<api::DrainWorkerRequest>,
    ) -> Result<Response<api::DrainWorkerResponse>, Status> {
        let caller = identify(&self.state, &request, "DrainWorker")?;
        let r = request.into_inner();
        self.bound(&caller, &[], &[("worker_id", &r.worker_id)])?;
        if r.worker_id.is_empty() {
            return Err(refused(&caller)(ApiError::BadRequest("worker_id is required".into())));
        }
        let draining = r.draining.unwrap_or(true);
        match self.execute(&caller, Command::SetDraining { worker_id: r.worker_id, draining }).await? {
            Outcome::Draining { worker_id, draining } => {
                Ok(reply(&caller, api::DrainWorkerResponse { worker_id, draining }))
            }
            _ => Err(refused(&caller)(other_outcome("set_draining"))),
        }
    }

    async fn set_dispatch_paused(
        &self,
        request: Request<api::SetPausedRequest>,
    ) -> Result<Response<api::SetPausedResponse>, Status> {
        let caller = identify(&self.state, &request, "SetDispatchPaused")?;
        let paused = request.get_ref().paused;
        self.execute(&caller, Command::PauseDispatch { paused }).await?;
        Ok(reply(&caller, api::SetPausedResponse { paused }))
    }

    async fn set_schedules_paused(
        &self,
        request: Request<api::SetPausedRequest>,
    ) -> Result<Response<api::SetPausedResponse>, Status> {
        let caller = identify(&self.state, &request, "SetSchedulesPaused")?;
        let paused = request.get_ref().paused;
        self.execute(&caller, Command::PauseSchedules { paused }).await?;
        Ok(reply(&caller, api::SetPausedResponse { paused }))
    }

    async fn hold_job_type(
        &self,
        request: Request<api::HoldJobTypeRequest>,
    ) -> Result<Response<api::HoldJobTypeResponse>, Status> {
        let caller = identify(&self.state, &request, "HoldJobType")?;
        let r = request.into_inner();
        self.bound(&caller, &[("job_type", &r.job_type)], &[])?;
        json_api::job_type_param(&r.job_type).map_err(refused(&caller))?;
        let command = Command::HoldJobType { job_type: r.job_type, detection: r.detection, dispatch: r.dispatch };
        match self.execute(&caller, command).await? {
            Outcome::JobTypeHolds { job_type, detection, dispatch } => Ok(reply(
                &caller,
                api::HoldJobTypeResponse {
                    job_type,
                    detection: detection.as_ref().map(messages::hold),
                    dispatch: dispatch.as_ref().map(messages::hold),
                },
            )),
            _ => Err(refused(&caller)(other_outcome("hold_job_type"))),
        }
    }

    async fn replay_jobs(
        &self,
        request: Request<api::ReplayJobsRequest>,
    ) -> Result<Response<api::ReplayJobsResponse>, Status> {
        let caller = identify(&self.state, &request, "ReplayJobs")?;
        let r = request.into_inner();
        self.bound(
            &caller,
            &[("job_type", &r.job_type), ("text", &r.text), ("error_contains", &r.error_contains)],
            &[],
        )?;
        for id in &r.ids {
            self.bound(&caller, &[], &[("ids", id)])?;
        }
        let job_type = text(&r.job_type);
        if let Some(t) = &job_type {
            json_api::job_type_param(t).map_err(refused(&caller))?;
        }
        let ids = r
            .ids
            .iter()
            .map(|id| parse_job_id(id).ok_or_else(|| ApiError::BadRequest(format!("{id:?} is not a job id"))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused(&caller))?;
        let filter = ReplayFilter {
            job_type,
            text: text(&r.text),
            error_contains: text(&r.error_contains),
            since: ms(r.since.as_ref()),
            until: ms(r.until.as_ref()),
            ids,
        };
        let command = Command::ReplayJobs { filter, limit: r.limit as usize, dry_run: r.dry_run };
        match self.execute(&caller, command).await? {
            Outcome::Replay(report) => Ok(reply(&caller, messages::replay_report(&report))),
            _ => Err(refused(&caller)(other_outcome("replay_jobs"))),
        }
    }

    async fn enqueue_job(
        &self,
        request: Request<api::EnqueueJobRequest>,
    ) -> Result<Response<api::JobResponse>, Status> {
        let caller = identify(&self.state, &request, "EnqueueJob")?;
        let r = request.into_inner();
        self.bound(&caller, &[("job_type", &r.job_type)], &[])?;
        json_api::job_type_param(&r.job_type).map_err(refused(&caller))?;
        let proposal = r.job.unwrap_or_default();
        let command = Command::EnqueueJob { job_type: r.job_type, proposal, cluster_context: None };
        match self.execute(&caller, command).await? {
            Outcome::Job(view) => Ok(reply(&caller, api::JobResponse { job: Some(messages::job(&view)) })),
            _ => Err(refused(&caller)(other_outcome("enqueue_job"))),
        }
    }

    async fn list_audit_events(
        &self,
        request: Request<api::ListAuditEventsRequest>,
    ) -> Result<Response<api::ListAuditEventsResponse>, Status> {
        let caller = identify(&self.state, &request, "ListAuditEvents")?;
        may_read_audit(&caller).map_err(refused(&caller))?;
        let r = request.get_ref();
        self.bound(
            &caller,
            &[("action", &r.action), ("target", &r.target), ("actor", &r.actor), ("outcome", &r.outcome)],
            &[],
        )?;
        let params = AuditParams {
            action: Some(r.action.clone()),
            target: Some(r.target.clone()),
            actor: Some(r.actor.clone()),
            outcome: Some(r.outcome.clone()),
            since: ms(r.since.as_ref()).map(|t| t.to_string()),
            until: ms(r.until.as_ref()).map(|t| t.to_string()),
            before: (r.before > 0).then_some(r.before),
            limit: given(r.limit),
            format: None,
        };
        let query = params.query().map_err(refused(&caller))?;
        self.state.store.settle().await;
        let events = self.state.store.audit(&query).map_err(|e| refused(&caller)(e.into()))?;
        let next_before = if events.len() == query.limit { events.last().map(|e| e.id).unwrap_or(0) } else { 0 };
        let events = events.iter().map(messages::audit_event).collect();
        Ok(reply(&caller, api::ListAuditEventsResponse { events, next_before }))
    }

    async fn watch_events(
        &self,
        request: Request<api::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = identify(&self.state, &request, "WatchEvents")?;
        Ok(reply(&caller, watch::events(&self.state, request.get_ref().after_event_id)))
    }
}

/// Server reflection (v1, and v1alpha for older tools) of the worker protocol, the admin
/// API and the health service.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_put_replaces_the_parts_its_mask_names_else_those_it_sets() {
        let config =
            pb::PersistedJobTypeConfig { admin_runtime: Some(pb::AdminRuntimeConfig::default()), ..Default::default() };
        let parts = config_parts(&config, None).unwrap();
        assert!(parts.admin_runtime && !parts.admin_config_values && !parts.worker_config_values);
        let mask = prost_types::FieldMask { paths: vec!["worker_config_values".into()] };
        let parts = config_parts(&config, Some(&mask)).unwrap();
        assert!(parts.worker_config_values && !parts.admin_runtime);
        let bad = prost_types::FieldMask { paths: vec!["job_type".into()] };
        assert_eq!(config_parts(&config, Some(&bad)).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
