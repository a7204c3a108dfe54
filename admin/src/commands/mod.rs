//! The command layer: every change an operator can make to the admin is a [`Command`]
//! executed by [`Components::execute`], the one entry point, on behalf of an [`Actor`].
//! It returns a typed [`Outcome`] or a typed [`Refusal`]. The JSON API and the pages
//! are thin translators onto it (they parse their request into a command and render
//! the result their own way), so both reach the same outcome for the same request, and
//! there is one place that knows who did what.
//!
//! Every command, carried out or refused, leaves an event in the audit trail
//! ([`crate::audit`]). Where a command's effect is a change to the state store (a job,
//! a hold, a schedule), the effect and its audit event are queued inside one
//! [`crate::store::Store::atomically`] and so commit in one transaction; where the
//! effect lives elsewhere (a saved config, the token file), the event follows it. Either
//! way the command is answered only once its event is durable, so an answered command is
//! never missing from the trail.
//!
//! `governance.rs` holds the operator's controls: holds, schedules, bulk replay and
//! enqueue by hand.

mod governance;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use proto::pb::{self, JobState};
use serde_json::{Value, json};

pub use self::governance::{ReplayFilter, ReplayReport, ScheduleSpec, ScheduleView};
use crate::{
    audit::{AuditTrail, Entry},
    auth::{Role, TokenError, TokenInfo},
    components::Components,
    config::RateCap,
    config_store::ConfigStoreError,
    dispatcher::JobActionError,
    events::EventKind,
    holds::Hold,
    job::JobView,
    scheduler::{DetectError, DetectOptions, DetectionMode},
    schedules::ScheduleError,
    schema::SchemaError,
};

/// Who asked for a command, and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A caller on an admin with authentication off (a local admin), named by the surface
    /// it came through (`api`, `ui`, `demo`).
    Local(&'static str),
    /// An API token, by its name.
    Token { name: String, role: Role },
    /// An mTLS client certificate, by its subject.
    Certificate { subject: String, role: Role },
    /// A signed-in page session, by the name of the token it was opened with.
    Session { user: String, role: Role },
}

impl Actor {
    pub fn role(&self) -> Role {
        match self {
            Actor::Local(_) => Role::Admin,
            Actor::Token { role, .. } | Actor::Certificate { role, .. } | Actor::Session { role, .. } => *role,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Local(via) => f.write_str(via),
            Actor::Token { name, .. }
            | Actor::Certificate { subject: name, .. }
            | Actor::Session { user: name, .. } => f.write_str(name),
        }
    }
}

/// Who is asking, and about which request: the actor, the request id the audit trail
/// records, and the approval token the request carried (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub request_id: String,
    pub approval: Option<String>,
}

impl Caller {
    /// A caller with a fresh request id and no approval.
    pub fn new(actor: Actor) -> Caller {
        Caller { actor, request_id: crate::random::hex(8), approval: None }
    }

    /// The same caller, presenting an approval token.
    pub fn with_approval(mut self, approval: Option<String>) -> Caller {
        if approval.as_deref().is_some_and(|a| !a.is_empty()) {
            self.approval = approval;
        }
        self
    }
}

impl From<Actor> for Caller {
    fn from(actor: Actor) -> Caller {
        Caller::new(actor)
    }
}

/// A change an operator asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Replace a job type's saved config (validated against its descriptor; sensitive
    /// and read-only fields absent from it keep their saved values).
    SaveConfig {
        config: pb::PersistedJobTypeConfig,
    },
    /// Ask a worker for the job type's descriptor again.
    RefreshSchema {
        job_type: String,
        force: bool,
    },
    /// Run a detection now: `Run` creates jobs, `Preview` only shows proposals. `options`
    /// (default: none) are the caller's for this one detection.
    Detect {
        job_type: String,
        mode: DetectionMode,
        options: DetectOptions,
    },
    CancelJob {
        seq: i64,
        reason: String,
    },
    /// End a job as FAILED, without retry.
    ExpireJob {
        seq: i64,
        reason: String,
    },
    /// Start a new cycle of attempts for a FAILED or CANCELED job.
    RetryJob {
        seq: i64,
    },
    /// A draining worker keeps its running jobs and gets no new work.
    SetDraining {
        worker_id: String,
        draining: bool,
    },
    PauseDispatch {
        paused: bool,
    },
    /// Issue an API token; its plaintext is in the outcome, once.
    CreateToken {
        name: String,
        role: Role,
    },
    /// Revoke a token; its sessions end too.
    RevokeToken {
        name: String,
    },
    /// Hold or release a job type's detection and/or dispatch (`None` keeps as is).
    HoldJobType {
        job_type: String,
        detection: Option<bool>,
        dispatch: Option<bool>,
    },
    /// Pause or resume every scheduled detection (on-demand ones still run).
    PauseSchedules {
        paused: bool,
    },
    /// Detect on a cron expression, or on an interval.
    SetSchedule {
        job_type: String,
        schedule: ScheduleSpec,
    },
    /// Remove a job type's cron schedule; it detects on its interval again.
    DeleteSchedule {
        job_type: String,
    },
    /// Replay dead letters in bulk: each eligible one becomes a new job.
    ReplayJobs {
        filter: ReplayFilter,
        limit: usize,
        dry_run: bool,
    },
    /// Create one job by hand, deduplicated like a proposal; with a cluster context, it
    /// executes with that laid over the admin's.
    EnqueueJob {
        job_type: String,
        proposal: pb::JobProposal,
        cluster_context: Option<Box<pb::ClusterContext>>,
    },
    /// Ask a worker for a preview of an object (the one that last observed it, else any
    /// worker of the job type).
    PreviewObject {
        job_type: String,
        request: pb::RequestObjectPreview,
    },
}

impl Command {
    /// The command's name, for logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SaveConfig { .. } => "save_config",
            Command::RefreshSchema { .. } => "refresh_schema",
            Command::Detect { mode: DetectionMode::Preview, .. } => "detect",
            Command::Detect { .. } => "run",
            Command::CancelJob { .. } => "cancel_job",
            Command::ExpireJob { .. } => "expire_job",
            Command::RetryJob { .. } => "retry_job",
            Command::SetDraining { .. } => "set_draining",
            Command::PauseDispatch { .. } => "pause_dispatch",
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::HoldJobType { .. } => "hold_job_type",
            Command::PauseSchedules { .. } => "pause_schedules",
            Command::SetSchedule { .. } => "set_schedule",
            Command::DeleteSchedule { .. } => "delete_schedule",
            Command::ReplayJobs { .. } => "replay_jobs",
            Command::EnqueueJob { .. } => "enqueue_job",
            Command::PreviewObject { .. } => "preview_object",
        }
    }

    /// What the command acts on, for the audit trail.
    pub fn target(&self) -> String {
        match self {
            Command::SaveConfig { config } => config.job_type.clone(),
            Command::RefreshSchema { job_type, .. }
            | Command::Detect { job_type, .. }
            | Command::HoldJobType { job_type, .. }
            | Command::SetSchedule { job_type, .. }
            | Command::DeleteSchedule { job_type }
            | Command::EnqueueJob { job_type, .. }
            | Command::PreviewObject { job_type, .. } => job_type.clone(),
            Command::CancelJob { seq, .. } | Command::ExpireJob { seq, .. } | Command::RetryJob { seq } => {
                crate::job::job_id(*seq)
            }
            Command::SetDraining { worker_id, .. } => worker_id.clone(),
            Command::PauseDispatch { .. } => "dispatch".into(),
            Command::PauseSchedules { .. } => "schedules".into(),
            Command::CreateToken { name, .. } | Command::RevokeToken { name } => name.clone(),
            Command::ReplayJobs { filter, .. } => filter.job_type.clone().unwrap_or_else(|| "jobs".into()),
        }
    }

    /// The command's parameters for the audit trail: never a secret (a config's
    /// sensitive values are redacted by the caller of [`Components::execute`], a token's
    /// plaintext is not a parameter, job parameters are named, not shown).
    fn audit_params(&self, c: &Components) -> Value {
        match self {
            Command::SaveConfig { config } => {
                let shown = match c.configs.descriptor(&config.job_type) {
                    Some(d) => crate::validator::redact(&d, config),
                    None => pb::PersistedJobTypeConfig {
                        job_type: config.job_type.clone(),
                        admin_runtime: config.admin_runtime,
                        ..Default::default()
                    },
                };
                let value = proto::json::to_value_with(&shown, true).unwrap_or(Value::Null);
                if value.to_string().len() > 16 * 1024 {
                    json!({ "job_type": config.job_type, "truncated": true })
                } else {
                    value
                }
            }
            Command::RefreshSchema { force, .. } => json!({ "force": force }),
            Command::Detect { options, .. } => options.to_json(),
            Command::RetryJob { .. } | Command::DeleteSchedule { .. } => json!({}),
            Command::CancelJob { reason, .. } | Command::ExpireJob { reason, .. } => json!({ "reason": reason }),
            Command::SetDraining { draining, .. } => json!({ "draining": draining }),
            Command::PauseDispatch { paused } | Command::PauseSchedules { paused } => json!({ "paused": paused }),
            Command::CreateToken { name, role } => json!({ "name": name, "role": role.to_string() }),
            Command::RevokeToken { name } => json!({ "name": name }),
            Command::HoldJobType { detection, dispatch, .. } => json!({ "detection": detection, "dispatch": dispatch }),
            Command::SetSchedule { schedule, .. } => schedule.to_json(),
            Command::ReplayJobs { filter, limit, dry_run } => {
                json!({ "filter": filter.to_json(), "limit": limit, "dry_run": dry_run })
            }
            Command::PreviewObject { request, .. } => {
                json!({ "object_id": request.object_id, "format": request.format, "row_limit": request.row_limit })
            }
            Command::EnqueueJob { proposal, cluster_context, .. } => {
                let mut names: Vec<&String> = proposal.parameters.keys().collect();
                names.sort();
                let mut params = json!({
                    "dedupe_key": proposal.dedupe_key,
                    "priority": crate::job::priority_name(if proposal.priority == 0 { pb::JobPriority::Normal as i32 } else { proposal.priority }),
                    "summary": proposal.summary,
                    "parameters": names,
                });
                if let Some(c) = cluster_context {
                    params["cluster_context"] = proto::json::to_value_with(c.as_ref(), true).unwrap_or_default();
                }
                params
            }
        }
    }

    /// Wide or destructive commands: with an approval token configured, they need it.
    /// A replay's dry run changes nothing and needs none.
    pub fn needs_approval(&self) -> bool {
        matches!(
            self,
            Command::ReplayJobs { dry_run: false, .. }
                | Command::PauseDispatch { .. }
                | Command::PauseSchedules { .. }
                | Command::DeleteSchedule { .. }
        )
    }

    /// The least role that may run this command: configs, tokens, anything that runs an
    /// operator script and a detection given its own cluster context need an admin, the
    /// rest an operator. `job_type_of` names the job
    /// type of a job (a retried script job runs its script again).
    pub fn required_role(&self, job_type_of: impl Fn(i64) -> Option<String>) -> Role {
        let script = crate::auth::runs_operator_code;
        match self {
            Command::SaveConfig { .. } | Command::CreateToken { .. } | Command::RevokeToken { .. } => Role::Admin,
            Command::Detect { job_type, mode: DetectionMode::Run, .. } if script(job_type) => Role::Admin,
            // Where the workers connect is the admin's configuration.
            Command::Detect { options: DetectOptions { cluster_context: Some(_), .. }, .. }
            | Command::EnqueueJob { cluster_context: Some(_), .. } => Role::Admin,
            Command::RetryJob { seq } if job_type_of(*seq).is_some_and(|t| script(&t)) => Role::Admin,
            // A schedule or a hand-made job runs the operator scripts too.
            Command::SetSchedule { job_type, .. }
            | Command::DeleteSchedule { job_type }
            | Command::EnqueueJob { job_type, .. }
                if script(job_type) =>
            {
                Role::Admin
            }
            _ => Role::Operator,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub enum Outcome {
    ConfigSaved(Arc<pb::PersistedJobTypeConfig>),
    SchemaRefreshed(Arc<pb::JobTypeDescriptor>),
    /// `queued`: a detection was running, this one follows it.
    DetectionRequested {
        queued: bool,
        /// The detection's report once it has run (the API waits for it).
        report: crate::scheduler::DetectionWatch,
    },
    /// The job after a cancel, expire or retry.
    Job(Box<JobView>),
    Draining {
        worker_id: String,
        draining: bool,
    },
    DispatchPaused(bool),
    /// `token` is the plaintext, shown this once.
    TokenCreated {
        info: TokenInfo,
        token: String,
    },
    TokenRevoked(TokenInfo),
    /// A job type's holds after the command.
    JobTypeHolds {
        job_type: String,
        detection: Option<Hold>,
        dispatch: Option<Hold>,
    },
    SchedulesPaused(bool),
    Schedule(Box<ScheduleView>),
    Replay(Box<ReplayReport>),
    Preview(Box<crate::observations::PreviewView>),
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Config(#[from] ConfigStoreError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Job(#[from] JobActionError),
    #[error("no connected worker {0:?}")]
    NotConnected(String),
    #[error("{command} needs the {needed} role; {actor} has the {has} role")]
    Forbidden { command: &'static str, needed: Role, actor: String, has: Role },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Preview(#[from] crate::observations::PreviewError),
    #[error("{command} needs approval: send the approval token in X-Plughost-Approval")]
    ApprovalRequired { command: &'static str },
    #[error("{command} needs approval: the approval token is wrong")]
    ApprovalWrong { command: &'static str },
    #[error("run-now of {job_type:?} is capped at {cap}; try again in {retry_after_secs} s")]
    RateLimited { job_type: String, cap: RateCap, retry_after_secs: u64 },
    /// Refused because of an operator's hold.
    #[error("{0}")]
    Held(String),
    /// A detection of a job type whose required settings are empty: it could find
    /// nothing, so it is not started.
    #[error("{name} needs configuration: set {}", missing.join(", "))]
    NeedsConfiguration { job_type: String, name: String, missing: Vec<String> },
    #[error("no job type {0:?} (no worker has offered it)")]
    UnknownJobType(String),
    #[error("job type {0:?} has no cron schedule")]
    NoSchedule(String),
    /// A request that is well formed but cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    #[error("an active job has the same dedupe key: {job_id}")]
    Duplicate { job_id: String },
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The kind of refusal, a static name: the `outcome` label of
    /// `plughost_admin_commands_total` (beside `ok`).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Config(_) => "config",
            Refusal::Schema(_) => "schema",
            Refusal::Detect(_) => "detect",
            Refusal::Job(JobActionError::NotFound(_)) => "not_found",
            Refusal::Job(JobActionError::Conflict { .. }) => "conflict",
            Refusal::Job(JobActionError::Duplicate { .. }) | Refusal::Duplicate { .. } => "duplicate",
            Refusal::NotConnected(_) => "not_connected",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::Token(_) => "token",
            Refusal::Schedule(_) => "schedule",
            Refusal::Preview(_) => "preview",
            Refusal::ApprovalRequired { .. } => "approval_required",
            Refusal::ApprovalWrong { .. } => "approval_wrong",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Held(_) => "held",
            Refusal::NeedsConfiguration { .. } => "needs_configuration",
            Refusal::UnknownJobType(_) => "unknown_job_type",
            Refusal::NoSchedule(_) => "no_schedule",
            Refusal::Invalid(_) => "invalid",
            Refusal::Internal(_) => "internal",
        }
    }
}

/// On-demand detections per job type within the cap's window.
pub struct RunNowLimiter {
    cap: RateCap,
    recent: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl RunNowLimiter {
    pub fn new(cap: RateCap) -> RunNowLimiter {
        RunNowLimiter { cap, recent: Mutex::new(HashMap::new()) }
    }

    /// Takes one run for `job_type` at `now`, or says in how many seconds one is free.
    fn take(&self, job_type: &str, now: i64) -> Result<(), u64> {
        let window = self.cap.window.as_millis() as i64;
        let mut recent = self.recent.lock().expect("run-now lock");
        let q = recent.entry(job_type.to_string()).or_default();
        while q.front().is_some_and(|t| *t <= now - window) {
            q.pop_front();
        }
        if q.len() >= self.cap.max as usize {
            let free_at = q.front().copied().unwrap_or(now) + window;
            return Err(((free_at - now).max(1) as u64).div_ceil(1000));
        }
        q.push_back(now);
        Ok(())
    }
}

/// Records a command's audit event once: inside the command's store bundle when its
/// effect is a store write, else after the effect.
struct Recorder<'a> {
    trail: &'a AuditTrail,
    caller: &'a Caller,
    action: &'static str,
    target: String,
    params: Value,
    /// The event's store ticket once recorded (0: not yet).
    ticket: AtomicU64,
}

impl Recorder<'_> {
    fn record(&self, refused: Option<String>) -> u64 {
        let ticket = self.trail.record(Entry {
            actor: &self.caller.actor,
            action: self.action,
            target: self.target.clone(),
            params: self.params.clone(),
            refused,
            request_id: &self.caller.request_id,
        });
        self.ticket.store(ticket, Ordering::Relaxed);
        ticket
    }

    fn recorded(&self) -> Option<u64> {
        Some(self.ticket.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

impl Components {
    /// Executes one operator command on behalf of `caller`, and records it in the audit
    /// trail, carried out or refused.
    pub async fn execute(&self, caller: &Caller, command: Command) -> Result<Outcome, Refusal> {
        let name = command.name();
        let actor = &caller.actor;
        let rec = Recorder {
            trail: &self.audit,
            caller,
            action: name,
            target: command.target(),
            params: command.audit_params(self),
            ticket: AtomicU64::new(0),
        };
        let result = match self.admit_command(caller, &command) {
            Err(refusal) => Err(refusal),
            Ok(()) => self.run_command(caller, command, &rec).await,
        };
        let ticket = match rec.recorded() {
            Some(ticket) => ticket,
            None => rec.record(result.as_ref().err().map(|e| e.to_string())),
        };
        let result = match self.store.durable(ticket).await {
            Ok(()) => result,
            Err(e) => {
                tracing::error!(error = %e, command = name, "the audit event of a command could not be made durable");
                Err(Refusal::Internal(format!("the audit trail cannot be written: {e}")))
            }
        };
        self.monitor.count_command(name, result.as_ref().map_or_else(Refusal::kind, |_| "ok"));
        match &result {
            Ok(_) => {
                tracing::info!(actor = %actor, command = name, request_id = %caller.request_id, "command carried out")
            }
            Err(e) => {
                tracing::info!(actor = %actor, command = name, request_id = %caller.request_id, refusal = %e, "command refused")
            }
        }
        result
    }

    /// The checks before a command runs: the actor's role, the approval token, the job
    /// type's required settings (a detection, run or preview, of a job type that needs
    /// configuration would find nothing), the run-now cap.
    fn admit_command(&self, caller: &Caller, command: &Command) -> Result<(), Refusal> {
        let name = command.name();
        let actor = &caller.actor;
        let needed = command.required_role(|seq| self.dispatcher.job(seq).map(|j| j.spec.job_type.clone()));
        if actor.role() < needed {
            return Err(Refusal::Forbidden { command: name, needed, actor: actor.to_string(), has: actor.role() });
        }
        if command.needs_approval()
            && let Some(expected) = self.config.approval_token.as_deref()
        {
            match caller.approval.as_deref() {
                None => return Err(Refusal::ApprovalRequired { command: name }),
                Some(given) if !crate::secrets::constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
                    return Err(Refusal::ApprovalWrong { command: name });
                }
                Some(_) => {}
            }
        }
        if let Command::Detect { job_type, .. } = command {
            self.check_configured(job_type)?;
        }
        if let Command::Detect { job_type, .. } = command
            && let Err(retry_after_secs) = self.run_now.take(job_type, self.clock.now_ms())
        {
            return Err(Refusal::RateLimited {
                job_type: job_type.clone(),
                cap: self.config.run_now_max,
                retry_after_secs,
            });
        }
        Ok(())
    }

    /// Refuses a job type whose required settings are empty (see
    /// [`crate::validator::missing_required`]), naming them by their labels.
    fn check_configured(&self, job_type: &str) -> Result<(), Refusal> {
        let Some(descriptor) = self.configs.descriptor(job_type) else { return Ok(()) };
        let Some(config) = self.configs.config(job_type) else { return Ok(()) };
        let missing = crate::validator::missing_required(&descriptor, &config);
        if missing.is_empty() {
            return Ok(());
        }
        let name = if descriptor.display_name.is_empty() { job_type } else { &descriptor.display_name };
        Err(Refusal::NeedsConfiguration { job_type: job_type.to_string(), name: name.to_string(), missing })
    }

    /// Runs `f` and records the audit event in the same store bundle, so whatever `f`
    /// queues and the event commit in one transaction.
    fn atomically<T>(&self, rec: &Recorder<'_>, f: impl FnOnce() -> Result<T, Refusal>) -> Result<T, Refusal> {
        self.store.atomically(|| {
            let result = f();
            rec.record(result.as_ref().err().map(|e| e.to_string()));
            result
        })
    }

    async fn run_command(&self, caller: &Caller, command: Command, rec: &Recorder<'_>) -> Result<Outcome, Refusal> {
        let actor = &caller.actor;
        match command {
            Command::SaveConfig { config } => self.save_config(actor, config).await.map(Outcome::ConfigSaved),
            Command::RefreshSchema { job_type, force } => {
                Ok(Outcome::SchemaRefreshed(self.schemas.refresh_schema(&job_type, force).await?))
            }
            Command::Detect { job_type, mode, options } => {
                if let Some(hold) = self.holds.get(crate::holds::HoldKind::Detection, &job_type) {
                    return Err(Refusal::Held(format!(
                        "detection of {job_type:?} is held (by {} since {})",
                        hold.set_by,
                        crate::text::time_label(hold.set_at)
                    )));
                }
                let (queued, report) = self.scheduler.request_detection(&job_type, mode, options)?;
                Ok(Outcome::DetectionRequested { queued, report })
            }
            Command::CancelJob { seq, reason } => self.atomically(rec, || {
                Ok(Outcome::Job(Box::new(self.dispatcher.stop_job(seq, JobState::Canceled, &reason)?)))
            }),
            Command::ExpireJob { seq, reason } => self.atomically(rec, || {
                Ok(Outcome::Job(Box::new(self.dispatcher.stop_job(seq, JobState::Failed, &reason)?)))
            }),
            Command::RetryJob { seq } => {
                self.atomically(rec, || Ok(Outcome::Job(Box::new(self.dispatcher.retry_job(seq)?))))
            }
            Command::SetDraining { worker_id, draining } => self.set_draining(actor, worker_id, draining, rec),
            Command::PauseDispatch { paused } => {
                self.atomically(rec, || {
                    self.set_hold(crate::holds::HoldKind::Dispatch, "", paused, actor);
                    Ok(())
                })?;
                self.dispatcher.wake();
                Ok(Outcome::DispatchPaused(paused))
            }
            Command::CreateToken { name, role } => {
                let token = self.auth.tokens.create(&name, role, self.clock.now_ms())?;
                let info = self.auth.tokens.verify(&token).ok_or_else(|| Refusal::Internal("token vanished".into()))?;
                Ok(Outcome::TokenCreated { info, token })
            }
            Command::RevokeToken { name } => {
                let info = self.auth.tokens.revoke(&name)?;
                self.auth.sessions.close_user(&name);
                Ok(Outcome::TokenRevoked(info))
            }
            Command::HoldJobType { job_type, detection, dispatch } => {
                self.hold_job_type(actor, job_type, detection, dispatch, rec)
            }
            Command::PauseSchedules { paused } => {
                self.atomically(rec, || {
                    self.set_hold(crate::holds::HoldKind::Schedules, "", paused, actor);
                    Ok(())
                })?;
                self.scheduler.wake();
                Ok(Outcome::SchedulesPaused(paused))
            }
            Command::SetSchedule { job_type, schedule } => self.set_schedule(actor, job_type, schedule, rec).await,
            Command::DeleteSchedule { job_type } => self.delete_schedule(job_type, rec),
            Command::ReplayJobs { filter, limit, dry_run } => {
                self.replay_jobs(actor, filter, limit, dry_run, rec).await
            }
            Command::EnqueueJob { job_type, proposal, cluster_context } => {
                self.enqueue_job(job_type, proposal, cluster_context, rec)
            }
            Command::PreviewObject { job_type, request } => self.preview_object(job_type, request).await,
        }
    }

    /// Saves a job type's config (the config store validates it) and tells everyone who
    /// cares: the event bus, the activity timeline, the scheduler and the dispatcher.
    async fn save_config(
        &self,
        actor: &Actor,
        config: pb::PersistedJobTypeConfig,
    ) -> Result<Arc<pb::PersistedJobTypeConfig>, Refusal> {
        let job_type = config.job_type.clone();
        let configs = self.configs.clone();
        let by = actor.to_string();
        let saved = tokio::task::spawn_blocking(move || configs.save_config(config, &by))
            .await
            .map_err(|e| Refusal::Internal(format!("saving the config stopped: {e}")))??;
        self.events.publish(EventKind::ConfigSaved { job_type: job_type.clone(), updated_by: actor.to_string() });
        self.journal.record(
            &job_type,
            "",
            pb::ActivitySource::Admin,
            "config",
            &format!("configuration saved by {actor}"),
        );
        self.scheduler.wake();
        self.dispatcher.wake();
        Ok(saved)
    }
}
