//! The operator's controls, as commands: holds (per job type, global, worker drains),
//! schedules, bulk replay of dead letters and enqueue by hand. Each writes its effect and
//! its audit event in one store bundle (see the module above).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Actor, Components, Outcome, Recorder, Refusal};
use crate::{
    auth::Role,
    dispatcher::{Admission, NewJob},
    events::EventKind,
    holds::{Hold, HoldKind},
    job::{Job, JobSpecData, is_final, job_id},
    schedules::{CronSchedule, CronSpec, MAX_INTERVAL_MINUTES, ScheduleError},
    store::{JobQuery, MAX_PAGE, Op},
};

/// How a job type detects: on a cron expression in a time zone, or every N minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSpec {
    Cron { cron: String, time_zone: String },
    Interval { minutes: i64 },
}

impl ScheduleSpec {
    /// Reads `{"cron": ..., "time_zone": ...}` (time zone default UTC) or
    /// `{"interval_minutes": N}`.
    pub fn from_json(value: &Value) -> Result<ScheduleSpec, ScheduleError> {
        let shape = |why: &str| ScheduleError::Shape(why.to_string());
        let Value::Object(map) = value else { return Err(shape("the body is not a JSON object")) };
        if let Some(key) = map.keys().find(|k| !["cron", "time_zone", "interval_minutes"].contains(&k.as_str())) {
            return Err(shape(&format!("unknown field {key:?}")));
        }
        match (map.get("cron"), map.get("interval_minutes")) {
            (Some(_), Some(_)) => Err(shape("give cron or interval_minutes, not both")),
            (Some(Value::String(cron)), None) => {
                let time_zone = match map.get("time_zone") {
                    None | Some(Value::Null) => "UTC".to_string(),
                    Some(Value::String(tz)) if !tz.trim().is_empty() => tz.trim().to_string(),
                    Some(_) => return Err(shape("time_zone must be a string such as \"Europe/Berlin\"")),
                };
                Ok(ScheduleSpec::Cron { cron: cron.trim().to_string(), time_zone })
            }
            (Some(_), None) => Err(shape("cron must be a string such as \"0 3 * * *\"")),
            (None, Some(n)) => {
                let minutes = n.as_i64().ok_or_else(|| shape("interval_minutes must be a whole number"))?;
                if map.contains_key("time_zone") {
                    return Err(shape("time_zone goes with cron, not with interval_minutes"));
                }
                Ok(ScheduleSpec::Interval { minutes })
            }
            (None, None) => Err(shape("give cron or interval_minutes")),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            ScheduleSpec::Cron { cron, time_zone } => json!({ "cron": cron, "time_zone": time_zone }),
            ScheduleSpec::Interval { minutes } => json!({ "interval_minutes": minutes }),
        }
    }
}

/// A job type's schedule as the API and the pages show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ScheduleView {
    pub job_type: String,
    /// `cron` or `interval`.
    pub kind: &'static str,
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub interval_minutes: i64,
    pub previous_fire_at: Option<i64>,
    pub next_fire_at: Option<i64>,
    /// Its detection is held, or all schedules are paused.
    pub held: bool,
    pub enabled: bool,
    pub set_by: Option<String>,
    pub set_at: Option<i64>,
}

/// Which dead letters a bulk replay is about: either a list of ids, or a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayFilter {
    pub job_type: Option<String>,
    /// Case-insensitive substring of the summary, dedupe key or job id.
    pub text: Option<String>,
    pub error_contains: Option<String>,
    /// Finished at or after (Unix ms).
    pub since: Option<i64>,
    /// Finished before (Unix ms).
    pub until: Option<i64>,
    pub ids: Vec<i64>,
}

impl ReplayFilter {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "job_type": self.job_type,
            "text": self.text,
            "error_contains": self.error_contains,
            "since": self.since,
            "until": self.until,
        });
        if !self.ids.is_empty() {
            v["ids"] = json!(self.ids.iter().map(|s| job_id(*s)).collect::<Vec<_>>());
        }
        v
    }
}

/// What a bulk replay found and did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub dry_run: bool,
    /// Jobs the ids or the filter selected.
    pub matched: usize,
    /// Of those, the ones that may be replayed.
    pub eligible: usize,
    /// Eligible jobs left out by the limit.
    pub over_limit: usize,
    pub replayed: Vec<Replayed>,
    /// Why jobs were not eligible (at most [`SHOWN_INELIGIBLE`] listed).
    pub ineligible: Vec<Ineligible>,
    pub ineligible_count: usize,
    /// The filter matched more than [`REPLAY_SCAN_MAX`] jobs; only that many were looked at.
    pub scan_truncated: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub job_id: String,
    pub replay_of: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ineligible {
    pub job_id: String,
    pub reason: String,
}

/// Most ineligible jobs listed with their reasons in one report.
pub const SHOWN_INELIGIBLE: usize = 1000;
/// Most dead letters one replay request looks at.
pub const REPLAY_SCAN_MAX: usize = 100_000;

impl Components {
    /// Sets or lifts a hold in memory and queues its store write (call inside a bundle).
    pub(super) fn set_hold(&self, kind: HoldKind, target: &str, active: bool, actor: &Actor) {
        let (set_by, _) = crate::audit::actor_names(actor);
        let hold = Hold { kind, target: target.to_string(), set_by, set_at: self.clock.now_ms() };
        if self.holds.apply(kind, target, active.then(|| hold.clone())) {
            self.store.write(Op::Hold { hold: Box::new(hold), active });
        }
    }

    fn is_known_job_type(&self, job_type: &str) -> bool {
        self.configs.descriptor(job_type).is_some() || self.registry.job_types().contains_key(job_type)
    }

    pub(super) fn set_draining(
        &self,
        actor: &Actor,
        worker_id: String,
        draining: bool,
        rec: &Recorder<'_>,
    ) -> Result<Outcome, Refusal> {
        if draining && self.registry.get(&worker_id).is_none() {
            return Err(Refusal::NotConnected(worker_id));
        }
        self.atomically(rec, || {
            self.registry.set_draining(&worker_id, draining);
            self.set_hold(HoldKind::Drain, &worker_id, draining, actor);
            Ok(())
        })?;
        self.events.publish(EventKind::WorkerDrain { worker_id: worker_id.clone(), draining });
        self.dispatcher.wake();
        self.scheduler.wake();
        Ok(Outcome::Draining { worker_id, draining })
    }

    pub(super) fn hold_job_type(
        &self,
        actor: &Actor,
        job_type: String,
        detection: Option<bool>,
        dispatch: Option<bool>,
        rec: &Recorder<'_>,
    ) -> Result<Outcome, Refusal> {
        if !self.is_known_job_type(&job_type) {
            return Err(Refusal::UnknownJobType(job_type));
        }
        if detection.is_none() && dispatch.is_none() {
            return Err(Refusal::Invalid("give detection and/or dispatch (true holds, false releases)".into()));
        }
        self.atomically(rec, || {
            if let Some(held) = detection {
                self.set_hold(HoldKind::Detection, &job_type, held, actor);
            }
            if let Some(held) = dispatch {
                self.set_hold(HoldKind::JobDispatch, &job_type, held, actor);
            }
            Ok(())
        })?;
        self.scheduler.wake();
        self.dispatcher.wake();
        Ok(Outcome::JobTypeHolds {
            detection: self.holds.get(HoldKind::Detection, &job_type),
            dispatch: self.holds.get(HoldKind::JobDispatch, &job_type),
            job_type,
        })
    }

    /// The schedule of a job type with a descriptor (None without one).
    pub fn schedule_view(&self, job_type: &str) -> Option<ScheduleView> {
        self.configs.descriptor(job_type)?;
        let runtime = self.configs.runtime(job_type);
        let held = self.holds.schedules_paused() || self.holds.is_held(HoldKind::Detection, job_type);
        let interval_minutes = i64::from(runtime.detection_interval_minutes.max(1));
        let view = match self.schedules.get(job_type) {
            Some(row) => ScheduleView {
                job_type: job_type.to_string(),
                kind: "cron",
                cron: Some(row.cron.clone()),
                time_zone: Some(row.time_zone.clone()),
                interval_minutes,
                previous_fire_at: (row.last_fired_at > 0).then_some(row.last_fired_at),
                next_fire_at: self.schedules.next_fire(job_type),
                held,
                enabled: runtime.enabled,
                set_by: Some(row.set_by),
                set_at: Some(row.set_at),
            },
            None => {
                let (previous, next) = self.scheduler.scheduled_times(job_type);
                ScheduleView {
                    job_type: job_type.to_string(),
                    kind: "interval",
                    cron: None,
                    time_zone: None,
                    interval_minutes,
                    previous_fire_at: (previous > 0).then_some(previous),
                    next_fire_at: (next > 0).then_some(next),
                    held,
                    enabled: runtime.enabled,
                    set_by: None,
                    set_at: None,
                }
            }
        };
        Some(view)
    }

    /// Every job type's schedule, by name.
    pub fn schedule_views(&self) -> Vec<ScheduleView> {
        let mut names = self.configs.job_types();
        names.sort();
        names.iter().filter_map(|t| self.schedule_view(t)).collect()
    }

    pub(super) async fn set_schedule(
        &self,
        actor: &Actor,
        job_type: String,
        schedule: ScheduleSpec,
        rec: &Recorder<'_>,
    ) -> Result<Outcome, Refusal> {
        if self.configs.descriptor(&job_type).is_none() {
            return Err(Refusal::UnknownJobType(job_type));
        }
        match schedule {
            ScheduleSpec::Cron { cron, time_zone } => {
                let spec = CronSpec::parse(&cron, &time_zone)?;
                let (set_by, _) = crate::audit::actor_names(actor);
                let row = CronSchedule {
                    job_type: job_type.clone(),
                    cron,
                    time_zone,
                    set_by,
                    set_at: self.clock.now_ms(),
                    last_fired_at: 0,
                };
                self.atomically(rec, || {
                    self.store.write(Op::Schedule { job_type: job_type.clone(), cron: Some(Box::new(row.clone())) });
                    self.schedules.set(row, spec);
                    Ok(())
                })?;
            }
            ScheduleSpec::Interval { minutes } => {
                if !(1..=MAX_INTERVAL_MINUTES).contains(&minutes) {
                    return Err(ScheduleError::Interval { got: minutes, max: MAX_INTERVAL_MINUTES }.into());
                }
                let mut config = self.configs.config(&job_type).map(|c| (*c).clone()).unwrap_or_else(|| {
                    proto::pb::PersistedJobTypeConfig { job_type: job_type.clone(), ..Default::default() }
                });
                let mut runtime = config.admin_runtime.unwrap_or_else(|| self.configs.runtime(&job_type));
                runtime.detection_interval_minutes = minutes as i32;
                config.admin_runtime = Some(runtime);
                self.save_config(actor, config).await?;
                self.atomically(rec, || {
                    if self.schedules.remove(&job_type).is_some() {
                        self.store.write(Op::Schedule { job_type: job_type.clone(), cron: None });
                    }
                    Ok(())
                })?;
            }
        }
        self.rescheduled(job_type)
    }

    /// Tells the scheduler a type's schedule changed; answers with the schedule now.
    fn rescheduled(&self, job_type: String) -> Result<Outcome, Refusal> {
        self.scheduler.reschedule(&job_type);
        match self.schedule_view(&job_type) {
            Some(view) => Ok(Outcome::Schedule(Box::new(view))),
            None => Err(Refusal::UnknownJobType(job_type)),
        }
    }

    pub(super) fn delete_schedule(&self, job_type: String, rec: &Recorder<'_>) -> Result<Outcome, Refusal> {
        if self.schedules.get(&job_type).is_none() {
            return Err(Refusal::NoSchedule(job_type));
        }
        self.atomically(rec, || {
            self.schedules.remove(&job_type);
            self.store.write(Op::Schedule { job_type: job_type.clone(), cron: None });
            Ok(())
        })?;
        self.rescheduled(job_type)
    }

    /// The jobs a replay is about: by id, or the dead letters the filter matches (newest
    /// first, at most [`REPLAY_SCAN_MAX`]). Ids that name no job are reported.
    fn replay_candidates(&self, filter: &ReplayFilter, report: &mut ReplayReport) -> Result<Vec<Job>, Refusal> {
        let store_err = |e: crate::store::StoreError| Refusal::Internal(e.to_string());
        let mut found = Vec::new();
        if !filter.ids.is_empty() {
            for &seq in &filter.ids {
                match self.dispatcher.job(seq) {
                    Some(job) => found.push(job),
                    None => note_ineligible(report, seq, "no such job".into()),
                }
            }
            report.matched = filter.ids.len();
            return Ok(found);
        }
        let mut query = JobQuery {
            job_type: filter.job_type.clone(),
            dead_letter: Some(true),
            text: filter.text.clone(),
            error_contains: filter.error_contains.clone(),
            completed_since: filter.since,
            completed_until: filter.until,
            limit: MAX_PAGE,
            ..Default::default()
        };
        loop {
            let page = self.store.jobs(&query).map_err(store_err)?;
            let full = page.len() == MAX_PAGE;
            for view in &page {
                if found.len() >= REPLAY_SCAN_MAX {
                    report.scan_truncated = true;
                    break;
                }
                if let Some(job) = crate::job::parse_job_id(&view.job_id).and_then(|seq| self.dispatcher.job(seq)) {
                    found.push(job);
                }
            }
            if !full || report.scan_truncated {
                break;
            }
            query.before_seq = page.last().and_then(|v| crate::job::parse_job_id(&v.job_id));
        }
        report.matched = found.len();
        Ok(found)
    }

    /// For each job type among `jobs`, the newest job per dedupe key created after the
    /// oldest of them: one store scan per job type.
    fn newest_by_key(&self, jobs: &[Job]) -> Result<HashMap<String, HashMap<String, i64>>, Refusal> {
        let mut wanted: HashMap<&str, (i64, Vec<String>)> = HashMap::new();
        for job in jobs {
            let (oldest, keys) = wanted.entry(job.spec.job_type.as_str()).or_insert((job.seq, Vec::new()));
            *oldest = (*oldest).min(job.seq);
            keys.push(String::from(&*job.spec.dedupe_key));
        }
        let mut out = HashMap::new();
        for (job_type, (oldest, mut keys)) in wanted {
            keys.sort();
            keys.dedup();
            let newest =
                self.store.newest_with_keys(job_type, oldest, &keys).map_err(|e| Refusal::Internal(e.to_string()))?;
            out.insert(job_type.to_string(), newest);
        }
        Ok(out)
    }

    /// Why a job may not be replayed, if it may not. `newest` is [`Self::newest_by_key`]
    /// of the candidates.
    fn replay_blocker(
        &self,
        actor: &Actor,
        job: &Job,
        newest: &HashMap<String, HashMap<String, i64>>,
    ) -> Result<Option<String>, Refusal> {
        let store_err = |e: crate::store::StoreError| Refusal::Internal(e.to_string());
        if !is_final(job.state) {
            return Ok(Some("still active".into()));
        }
        if !job.dead_letter {
            return Ok(Some("not a dead letter".into()));
        }
        if crate::auth::runs_operator_code(&job.spec.job_type) && actor.role() < Role::Admin {
            return Ok(Some("replaying a script job needs the admin role".into()));
        }
        if let Some(seq) = self.store.replayed_as(job.seq).map_err(store_err)? {
            return Ok(Some(format!("already replayed as {}", job_id(seq))));
        }
        let spec = &job.spec;
        let newer = newest.get(&spec.job_type).and_then(|keys| keys.get(&*spec.dedupe_key)).filter(|s| **s > job.seq);
        if let Some(seq) = newer {
            return Ok(Some(format!("a newer job with the same dedupe key exists: {}", job_id(*seq))));
        }
        if let Some(seq) = self.dispatcher.active_with_key(&spec.job_type, &spec.dedupe_key) {
            return Ok(Some(format!("an active job has the same dedupe key: {}", job_id(seq))));
        }
        Ok(None)
    }

    pub(super) async fn replay_jobs(
        &self,
        actor: &Actor,
        filter: ReplayFilter,
        limit: usize,
        dry_run: bool,
        rec: &Recorder<'_>,
    ) -> Result<Outcome, Refusal> {
        let max = self.config.replay_max;
        let limit = if limit == 0 { max } else { limit };
        if limit > max {
            return Err(Refusal::Invalid(format!(
                "limit {limit} is above the most one replay may do ({max}, --replay-max)"
            )));
        }
        if filter.ids.len() > max {
            return Err(Refusal::Invalid(format!("{} ids given; at most {max} (--replay-max)", filter.ids.len())));
        }
        // Read what was changed before this request.
        self.store.settle().await;
        let mut report = ReplayReport { dry_run, ..Default::default() };
        let mut eligible = Vec::new();
        let candidates = self.replay_candidates(&filter, &mut report)?;
        let dead: Vec<Job> = candidates.iter().filter(|j| j.dead_letter && is_final(j.state)).cloned().collect();
        let newest = self.newest_by_key(&dead)?;
        for job in candidates {
            match self.replay_blocker(actor, &job, &newest)? {
                Some(reason) => note_ineligible(&mut report, job.seq, reason),
                None => eligible.push(job),
            }
        }
        report.eligible = eligible.len();
        report.over_limit = eligible.len().saturating_sub(limit);
        eligible.truncate(limit);
        if dry_run {
            return Ok(Outcome::Replay(Box::new(report)));
        }
        // Oldest first, so the replays keep the originals' order.
        eligible.sort_by_key(|j| j.seq);
        let now = self.clock.now_ms();
        let mut by_type: Vec<(String, Vec<(i64, NewJob)>)> = Vec::new();
        for job in &eligible {
            let new = NewJob { spec: replay_spec(job, now) };
            match by_type.iter_mut().find(|(t, _)| *t == job.spec.job_type) {
                Some((_, list)) => list.push((job.seq, new)),
                None => by_type.push((job.spec.job_type.clone(), vec![(job.seq, new)])),
            }
        }
        self.atomically(rec, || {
            for (_, list) in by_type {
                let (originals, jobs): (Vec<i64>, Vec<NewJob>) = list.into_iter().unzip();
                let admitted = self.dispatcher.admit(jobs, i64::MAX);
                for (original, admission) in originals.into_iter().zip(admitted) {
                    match admission {
                        Admission::Created { job_id } => {
                            report.replayed.push(Replayed { job_id, replay_of: crate::job::job_id(original) })
                        }
                        _ => note_ineligible(&mut report, original, "an active job has the same dedupe key".into()),
                    }
                }
            }
            Ok(())
        })?;
        Ok(Outcome::Replay(Box::new(report)))
    }

    pub(super) fn enqueue_job(
        &self,
        job_type: String,
        mut proposal: proto::pb::JobProposal,
        cluster_context: Option<Box<proto::pb::ClusterContext>>,
        rec: &Recorder<'_>,
    ) -> Result<Outcome, Refusal> {
        if self.configs.descriptor(&job_type).is_none() {
            return Err(Refusal::UnknownJobType(job_type));
        }
        if !proposal.job_type.is_empty() && proposal.job_type != job_type {
            return Err(Refusal::Invalid(format!("the job is for job type {:?}, not {job_type:?}", proposal.job_type)));
        }
        proposal.job_type = job_type.clone();
        crate::input::check_proposal(&proposal, &self.config.limits).map_err(Refusal::Invalid)?;
        let key = proposal.dedupe_key.clone();
        let spec = crate::job::JobSpecData {
            cluster_context: cluster_context.map(|c| std::sync::Arc::new(*c)),
            ..crate::scheduler::new_spec(&job_type, key.clone(), proposal, 0, self.clock.now_ms())
        };
        self.atomically(rec, || match self.dispatcher.admit(vec![NewJob { spec }], 1).pop() {
            Some(Admission::Created { job_id }) => {
                let seq = crate::job::parse_job_id(&job_id).unwrap_or(0);
                let job = self.dispatcher.job(seq).ok_or_else(|| Refusal::Internal("the new job vanished".into()))?;
                Ok(Outcome::Job(Box::new(job.view())))
            }
            _ => Err(Refusal::Duplicate {
                job_id: self.dispatcher.active_with_key(&job_type, &key).map(job_id).unwrap_or_default(),
            }),
        })
    }
}

impl Components {
    /// Asks the worker that last observed the object (else the first connected worker of
    /// the job type) for a preview, and waits for it.
    pub(super) async fn preview_object(
        &self,
        job_type: String,
        mut request: proto::pb::RequestObjectPreview,
    ) -> Result<Outcome, Refusal> {
        if !self.is_known_job_type(&job_type) {
            return Err(Refusal::UnknownJobType(job_type));
        }
        if request.object_id.is_empty() || request.object_id.iter().any(|p| p.is_empty() || p.len() > 512) {
            return Err(Refusal::Invalid("object_id must be a non-empty path of non-empty parts".into()));
        }
        let cap = crate::observations::MAX_PREVIEW_ROWS as i32;
        request.row_limit = if request.row_limit <= 0 { cap } else { request.row_limit.min(cap) };
        let session = self
            .observations
            .observer(&job_type, &request.object_id)
            .and_then(|w| self.registry.get(&w))
            .or_else(|| self.registry.detectors(&job_type).into_iter().next())
            .or_else(|| self.registry.executors(&job_type).into_iter().next())
            .ok_or_else(|| crate::observations::PreviewError::NoWorker(job_type.clone()))?;
        let request_id = self.ids.request("preview");
        let view = self.observations.preview(&session, request_id, request, self.config.send_timeout).await?;
        Ok(Outcome::Preview(Box::new(view)))
    }
}

fn note_ineligible(report: &mut ReplayReport, seq: i64, reason: String) {
    report.ineligible_count += 1;
    if report.ineligible.len() < SHOWN_INELIGIBLE {
        report.ineligible.push(Ineligible { job_id: job_id(seq), reason });
    }
}

/// A new job that does again what a dead letter failed to do.
fn replay_spec(job: &Job, now: i64) -> JobSpecData {
    let s = &job.spec;
    JobSpecData {
        job_type: s.job_type.clone(),
        dedupe_key: s.dedupe_key.clone(),
        priority: s.priority,
        summary: s.summary.clone(),
        detail: s.detail.clone(),
        parameters: s.parameters.clone(),
        labels: s.labels.clone(),
        created_at: now,
        not_before: 0,
        expires_at: 0,
        detection_run: 0,
        replay_of: job.seq,
        // A replay runs where the dead letter was meant to.
        cluster_context: s.cluster_context.clone(),
    }
}
