//! Placement: which ready job goes to which executor. Job types take turns by their
//! capability weight; within a type, highest priority then oldest first; a job goes to
//! the non-draining executor with the most free slots, ties rotating, preferring one
//! that has not failed the job. Per-type global concurrency and per-worker caps hold.
//!
//! The rules that decide whether a job can be placed at all (the dispatch gates,
//! [`Capacity`], [`concurrency_reached`]) are also what `explain.rs` tells an operator,
//! so they live here once, as functions both call.

use std::sync::Arc;

use proto::pb::{self, admin_to_worker_message::Body};

use super::{
    Dispatcher, Outbox,
    explain::WaitReason,
    machine::{Input, Policy},
    table::JobTable,
};
use crate::{holds::HoldKind, monitor::JobTypeMetrics, registry::WorkerSession};

/// One job type's share of a placement round.
struct Lane {
    job_type: String,
    metrics: Arc<JobTypeMetrics>,
    runtime: pb::AdminRuntimeConfig,
    policy: Policy,
    weight: usize,
    /// Executors with free slots, and how many.
    executors: Vec<(Arc<WorkerSession>, i64)>,
}

/// A job type's executors as placement sees them at one moment.
pub(super) struct Capacity {
    /// Connected workers that can execute the job type, draining ones included.
    pub connected: usize,
    pub draining: usize,
    /// Slots of the non-draining executors (each capped by the per-worker limit), and how
    /// many are taken: by the admin's attempts in flight there, or all of an executor's
    /// while it said it is full.
    pub total: i64,
    pub used: i64,
    /// Non-draining executors with a free slot, and how many.
    pub free: Vec<(Arc<WorkerSession>, i64)>,
    /// The largest capability weight among the non-draining executors (at least 1).
    pub weight: usize,
}

/// The job type's global concurrency limit, when its jobs in flight reach it.
pub(super) fn concurrency_reached(
    t: &JobTable,
    job_type: &str,
    runtime: &pb::AdminRuntimeConfig,
) -> Option<WaitReason> {
    let max = i64::from(runtime.global_execution_concurrency);
    let running = t.running.get(job_type).copied().unwrap_or(0);
    (running >= max).then_some(WaitReason::ConcurrencyReached { running, max })
}

impl Dispatcher {
    /// One dispatch pass: promotes delayed jobs, expires what expired, and assigns ready
    /// jobs to executors. Returns when something is next due, if anything is.
    pub fn dispatch_pass(&self) -> Option<i64> {
        let now = self.now();
        let mut out = Outbox::new();
        let next_wake;
        {
            let mut t = self.lock();
            t.promote(now);
            for seq in t.due_expiries(now) {
                // Only a job still PENDING expires; the machine refuses the others.
                let _ = self.transition(&mut t, seq, Input::ExpiryPassed, now, &mut out);
            }
            if self.dispatch_gate().is_none() {
                self.assign_ready(&mut t, now, &mut out);
            }
            next_wake = t.next_wake();
        }
        self.flush(out);
        next_wake
    }

    /// Why no job of any type is assigned now: the admin is stopping, or an operator
    /// paused all dispatch.
    pub(super) fn dispatch_gate(&self) -> Option<WaitReason> {
        if self.is_stopping() {
            return Some(WaitReason::AdminStopping);
        }
        if !self.parts().lease.holds() {
            return Some(WaitReason::LeaseUnconfirmed);
        }
        let hold = self.parts().holds.get(HoldKind::Dispatch, "")?;
        Some(WaitReason::DispatchPaused { by: hold.set_by, since: hold.set_at })
    }

    /// Why no job of this type is assigned now: an operator holds its dispatch.
    pub(super) fn type_gate(&self, job_type: &str) -> Option<WaitReason> {
        let hold = self.parts().holds.get(HoldKind::JobDispatch, job_type)?;
        Some(WaitReason::TypeHeld { by: hold.set_by, since: hold.set_at })
    }

    /// The job type's executors and their free slots at `now`.
    pub(super) fn capacity(
        &self,
        t: &JobTable,
        job_type: &str,
        runtime: &pb::AdminRuntimeConfig,
        now: i64,
    ) -> Capacity {
        let per_worker = i64::from(runtime.per_worker_execution_concurrency);
        let candidates = self.parts().registry.execution_candidates(job_type);
        let mut c = Capacity {
            connected: candidates.len(),
            draining: 0,
            total: 0,
            used: 0,
            free: Vec::with_capacity(candidates.len()),
            weight: 1,
        };
        for (s, draining) in candidates {
            if draining {
                c.draining += 1;
                continue;
            }
            let mut cap = s.execution_slots(job_type);
            if per_worker > 0 {
                cap = cap.min(per_worker);
            }
            c.total += cap;
            if t.full_until.get(&s.worker_id).is_some_and(|until| *until > now) {
                c.used += cap;
                continue;
            }
            c.weight = c.weight.max(s.capabilities.get(job_type).map(|c| c.weight.max(1) as usize).unwrap_or(1));
            let used = t.inflight.get(&s.worker_id).and_then(|m| m.get(job_type)).copied().unwrap_or(0);
            c.used += used.min(cap);
            if cap - used > 0 {
                c.free.push((s, cap - used));
            }
        }
        c
    }

    fn lanes(&self, t: &mut JobTable, now: i64) -> Vec<Lane> {
        let types: Vec<String> = t
            .queues
            .iter()
            .filter(|(k, q)| !q.is_empty() && self.type_gate(k).is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let mut lanes = Vec::with_capacity(types.len());
        for job_type in types {
            let runtime = self.parts().configs.runtime(&job_type);
            let Capacity { free: executors, weight, .. } = self.capacity(t, &job_type, &runtime, now);
            if !executors.is_empty() {
                let policy = Policy::from_runtime(&runtime, self.parts().cancel_grace.as_millis() as i64);
                let metrics = t.metrics(&job_type, &self.parts().monitor);
                lanes.push(Lane { job_type, metrics, runtime, policy, weight, executors });
            }
        }
        lanes
    }

    /// Weighted round robin over job types until nothing more fits.
    fn assign_ready(&self, t: &mut JobTable, now: i64, out: &mut Outbox) {
        let mut lanes = self.lanes(t, now);
        let mut progress = !lanes.is_empty();
        while progress {
            progress = false;
            for lane in lanes.iter_mut() {
                for _ in 0..lane.weight {
                    if concurrency_reached(t, &lane.job_type, &lane.runtime).is_some() {
                        break;
                    }
                    let Some(&key) = t.queues.get(&lane.job_type).and_then(|q| q.first()) else { break };
                    let seq = key.1;
                    let Some(job) = t.active.get(&seq) else {
                        t.queues.get_mut(&lane.job_type).map(|q| q.remove(&key));
                        continue;
                    };
                    let Some(idx) = pick(&lane.executors, &job.failed_on, t.rotate) else { break };
                    t.rotate = t.rotate.wrapping_add(1);
                    let session = lane.executors[idx].0.clone();
                    lane.executors[idx].1 -= 1;
                    if let Some(msg) = self.assign(t, seq, &session, lane, now, out) {
                        out.push((session, msg));
                    }
                    progress = true;
                }
            }
            lanes.retain(|l| l.executors.iter().any(|(_, f)| *f > 0));
        }
    }

    /// ASSIGNED: the machine starts the attempt; the execute request is built here.
    fn assign(
        &self,
        t: &mut JobTable,
        seq: i64,
        session: &WorkerSession,
        lane: &Lane,
        now: i64,
        out: &mut Outbox,
    ) -> Option<pb::AdminToWorkerMessage> {
        let p = self.parts();
        let queued_at = t.active.get(&seq)?.queued_at.get();
        lane.metrics.dispatch_latency.observe_ms(now - queued_at);
        let request_id = p.ids.request("exec");
        let input =
            Input::Assign { worker_id: &session.worker_id, session_id: session.session_id, request_id: &request_id };
        if !self.transition_with(t, seq, input, Some(&lane.policy), now, out).ok()? {
            return None;
        }
        let job = t.active.get(&seq)?;
        let cfg = p.configs.config(&job.spec.job_type);
        let request = pb::ExecuteJobRequest {
            request_id: request_id.clone(),
            job: Some(job.to_spec()),
            admin_runtime: Some(lane.runtime),
            admin_config_values: cfg.as_ref().map(|c| c.admin_config_values.clone()).unwrap_or_default(),
            worker_config_values: cfg.as_ref().map(|c| c.worker_config_values.clone()).unwrap_or_default(),
            cluster_context: Some(match &job.spec.cluster_context {
                Some(own) => crate::cluster_context::merge(own, p.cluster_context.current().as_ref()),
                None => p.cluster_context.current().as_ref().clone(),
            }),
            attempt: job.attempts_total,
        };
        Some(crate::wire::envelope(&request_id, Body::ExecuteJobRequest(request)))
    }
}

/// The executor with the most free slots, ties rotating; one that has not failed the job
/// if there is any with a free slot.
fn pick(executors: &[(Arc<WorkerSession>, i64)], failed_on: &[String], rotate: usize) -> Option<usize> {
    let choose = |allow_failed: bool| -> Option<usize> {
        let eligible =
            |(s, free): &(Arc<WorkerSession>, i64)| *free > 0 && (allow_failed || !failed_on.contains(&s.worker_id));
        let best = executors.iter().filter(|e| eligible(e)).map(|(_, free)| *free).max()?;
        // Counted, then walked again, rather than collected: this runs once per job.
        let tie = |e: &&(Arc<WorkerSession>, i64)| e.1 == best && eligible(e);
        let ties = executors.iter().filter(tie).count();
        executors.iter().enumerate().filter(|(_, e)| tie(e)).nth(rotate % ties).map(|(i, _)| i)
    };
    choose(false).or_else(|| choose(true))
}
