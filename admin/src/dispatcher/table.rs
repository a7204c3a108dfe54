//! The table of active jobs and the indexes the dispatcher works from: ready queues per
//! job type, delayed and expiring jobs, attempt deadlines, slots in use per worker, job
//! counts per state, dedupe keys, and recently finished jobs.
//!
//! A job's place in the indexes follows from its fields alone: [`JobTable::place`] puts
//! a job where its state says, and [`JobTable::unplace`] takes it out again using a
//! [`Placed`] snapshot taken before the transition, so a transition never has to know
//! which indexes it touches.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use proto::pb::JobState;

use crate::{
    id_hash::{IdMap, NameMap},
    job::{Job, is_final},
    monitor::{JobTypeMetrics, Monitor},
};

/// Recently finished jobs kept in memory, so a read right after completion does not
/// depend on the store's batch having been committed.
const RECENT_FINAL: usize = 4096;
/// Job states, by their proto numbers (0 = unspecified).
const STATES: usize = 7;

#[derive(Default)]
pub struct JobTable {
    /// Shared with the snapshots queued for the store and published as events: a job is
    /// copied only when it changes while one of those still holds it (`Arc::make_mut`),
    /// and a transition moves a pointer rather than the whole job.
    pub(super) active: IdMap<i64, Arc<Job>>,
    /// (job_type, dedupe_key) of every active job.
    dedupe: DedupeIndex,
    /// Ready PENDING jobs per job type: highest priority first, then oldest.
    pub(super) queues: BTreeMap<String, BTreeSet<(Reverse<i32>, i64)>>,
    /// PENDING jobs waiting for not_before or a retry backoff: (ready_at, seq).
    pub(super) delayed: BTreeSet<(i64, i64)>,
    /// PENDING jobs with an expiry: (expires_at, seq).
    pub(super) expiries: BTreeSet<(i64, i64)>,
    /// ASSIGNED/RUNNING jobs' execution deadlines and stop grace ends: (deadline, seq).
    pub(super) deadlines: BTreeSet<(i64, i64)>,
    pub(super) by_request: NameMap<Box<str>, i64>,
    /// seq -> (worker_id, request_id) of the attempt in flight, so releasing a slot needs
    /// no copy of the job's strings.
    slots: IdMap<i64, (Box<str>, Box<str>)>,
    /// worker_id -> job_type -> jobs the admin has in flight there.
    pub(super) inflight: NameMap<String, NameMap<String, i64>>,
    /// job_type -> ASSIGNED + RUNNING jobs.
    pub(super) running: NameMap<String, i64>,
    /// Executors that said they are full, skipped until then.
    pub(super) full_until: NameMap<String, i64>,
    /// job_type -> jobs per state (indexed by the state's number), over all jobs in the
    /// store. Keyed by job type alone so a count moves without building a key.
    counts: NameMap<String, [i64; STATES]>,
    recent: IdMap<i64, Arc<Job>>,
    recent_order: VecDeque<i64>,
    /// job_type -> its metrics, fetched from the monitor once per job type, so counting a
    /// job is a lookup here (under the table's lock, held anyway) and an atomic add.
    metrics: NameMap<String, Arc<JobTypeMetrics>>,
    next_seq: i64,
    pub(super) rotate: usize,
}

/// Where a job sat in the indexes before a transition (the attempt in flight, if any, is
/// in the table's `slots`).
pub struct Placed {
    state: JobState,
    ready_at: i64,
    deadline: i64,
}

impl Placed {
    pub fn of(job: &Job) -> Placed {
        Placed { state: job.state, ready_at: waits_until(job), deadline: job.deadline }
    }
}

/// When a PENDING job may be dispatched: the later of its `not_before` and the end of its
/// retry backoff (`ready_at`). Until then it sits in the delayed set.
pub fn waits_until(job: &Job) -> i64 {
    job.ready_at.max(job.spec.not_before)
}

/// The active jobs by (job_type, dedupe_key), without a copy of either string: a keyed
/// hash of the pair (SipHash with a random key, since peers choose dedupe keys) leads to
/// the jobs with that hash, and [`JobTable::holder_of`] compares their own specs. Two
/// pairs sharing a hash go to `collisions`, so nothing is lost when that happens.
#[derive(Default)]
struct DedupeIndex {
    keys: std::hash::RandomState,
    by_hash: IdMap<u64, i64>,
    collisions: IdMap<u64, Vec<i64>>,
}

impl DedupeIndex {
    fn hash(&self, job_type: &str, dedupe_key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one((job_type, dedupe_key))
    }

    fn insert(&mut self, job: &Job) {
        let h = self.hash(&job.spec.job_type, &job.spec.dedupe_key);
        self.insert_hashed(h, job.seq);
    }

    fn remove(&mut self, job: &Job) {
        let h = self.hash(&job.spec.job_type, &job.spec.dedupe_key);
        self.remove_hashed(h, job.seq);
    }

    fn insert_hashed(&mut self, h: u64, seq: i64) {
        match self.by_hash.get(&h) {
            None => {
                self.by_hash.insert(h, seq);
            }
            Some(&first) if first == seq => {}
            Some(_) => {
                let others = self.collisions.entry(h).or_default();
                if !others.contains(&seq) {
                    others.push(seq);
                }
            }
        }
    }

    fn remove_hashed(&mut self, h: u64, seq: i64) {
        if self.by_hash.get(&h) == Some(&seq) {
            match self.collisions.get_mut(&h).and_then(Vec::pop) {
                Some(next) => {
                    self.by_hash.insert(h, next);
                }
                None => {
                    self.by_hash.remove(&h);
                }
            }
        } else if let Some(others) = self.collisions.get_mut(&h) {
            others.retain(|&s| s != seq);
        }
        if self.collisions.get(&h).is_some_and(Vec::is_empty) {
            self.collisions.remove(&h);
        }
    }

    /// The jobs whose pair hashes as this one's: the holder, if any, is among them.
    fn candidates(&self, job_type: &str, dedupe_key: &str) -> impl Iterator<Item = i64> + '_ {
        self.hashed(self.hash(job_type, dedupe_key))
    }

    fn hashed(&self, h: u64) -> impl Iterator<Item = i64> + '_ {
        self.by_hash.get(&h).copied().into_iter().chain(self.collisions.get(&h).into_iter().flatten().copied())
    }
}

fn in_attempt(state: JobState) -> bool {
    matches!(state, JobState::Assigned | JobState::Running)
}

impl JobTable {
    pub fn new(next_seq: i64, loaded_counts: HashMap<(String, i32), i64>) -> JobTable {
        let mut counts: NameMap<String, [i64; STATES]> = NameMap::default();
        for ((job_type, state), n) in loaded_counts {
            if let Some(c) = counts.entry(job_type).or_default().get_mut(state as usize) {
                *c += n;
            }
        }
        JobTable { next_seq, counts, ..Default::default() }
    }

    /// The metrics of a job type (from the monitor the first time).
    pub fn metrics(&mut self, job_type: &str, monitor: &Monitor) -> Arc<JobTypeMetrics> {
        if let Some(m) = self.metrics.get(job_type) {
            return m.clone();
        }
        let m = monitor.job_type(job_type);
        self.metrics.insert(job_type.to_string(), m.clone());
        m
    }

    pub fn next_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Adds a new PENDING job (not yet dispatchable: see [`JobTable::make_ready`]).
    pub fn insert_new(&mut self, job: Arc<Job>) {
        self.count(&job.spec.job_type, job.state, 1);
        self.dedupe.insert(&job);
        self.active.insert(job.seq, job);
    }

    /// Adds a job loaded from the store at start (already counted there); PENDING jobs
    /// are placed by [`JobTable::make_ready`], others are requeued by a transition.
    pub fn insert_loaded(&mut self, job: Arc<Job>) {
        self.dedupe.insert(&job);
        self.active.insert(job.seq, job);
    }

    /// Puts a PENDING job in its queue, or in the delayed set while it must wait.
    pub fn make_ready(&mut self, seq: i64, now: i64) {
        if let Some(job) = self.active.get(&seq).filter(|j| j.state == JobState::Pending).cloned() {
            self.place_pending(&job, now);
        }
    }

    /// Takes an active job out of the table for a transition; hand it back with
    /// [`JobTable::put`] (or [`JobTable::restore`] if the transition was refused).
    pub fn take(&mut self, seq: i64) -> Option<(Arc<Job>, Placed)> {
        let job = self.active.remove(&seq)?;
        let placed = Placed::of(&job);
        Some((job, placed))
    }

    /// Returns a job whose transition was refused: it is unchanged, so are its indexes.
    pub fn restore(&mut self, job: Arc<Job>) {
        self.active.insert(job.seq, job);
    }

    /// Moves a job from where it was (`before`) to where its new state puts it.
    pub fn put(&mut self, job: Arc<Job>, before: Placed, now: i64) {
        let seq = job.seq;
        // The same attempt goes on (progress, a stop request): its slot stays.
        let same_attempt = in_attempt(before.state)
            && in_attempt(job.state)
            && self.slots.get(&seq).is_some_and(|(_, request_id)| *request_id == job.request_id);
        // Out of the old place.
        match before.state {
            JobState::Pending => {
                if let Some(q) = self.queues.get_mut(&job.spec.job_type) {
                    q.remove(&(Reverse(job.spec.priority), seq));
                }
                self.delayed.remove(&(before.ready_at, seq));
                self.expiries.remove(&(job.spec.expires_at, seq));
            }
            JobState::Assigned | JobState::Running => {
                if before.deadline != job.deadline || !same_attempt {
                    self.deadlines.remove(&(before.deadline, seq));
                }
                if !same_attempt {
                    self.release_slot(seq, &job.spec.job_type);
                }
            }
            _ => {}
        }
        if before.state != job.state {
            self.count(&job.spec.job_type, before.state, -1);
            self.count(&job.spec.job_type, job.state, 1);
        }
        // Into the new one.
        match job.state {
            JobState::Pending => {
                if is_final(before.state) {
                    self.dedupe.insert(&job);
                    self.recent.remove(&seq);
                }
                self.place_pending(&job, now);
                self.active.insert(seq, job);
            }
            JobState::Assigned | JobState::Running => {
                if !same_attempt {
                    self.take_slot(&job);
                }
                if !same_attempt || before.deadline != job.deadline {
                    self.deadlines.insert((job.deadline, seq));
                }
                self.active.insert(seq, job);
            }
            _ => {
                self.dedupe.remove(&job);
                self.remember_final(job);
            }
        }
    }

    /// Records the job's new attempt as holding a slot of its worker and job type.
    fn take_slot(&mut self, job: &Job) {
        let job_type = &job.spec.job_type;
        let per_type = match self.inflight.get_mut(&*job.worker_id) {
            Some(m) => m,
            None => self.inflight.entry(String::from(&*job.worker_id)).or_default(),
        };
        match per_type.get_mut(job_type) {
            Some(n) => *n += 1,
            None => {
                per_type.insert(job_type.clone(), 1);
            }
        }
        match self.running.get_mut(job_type) {
            Some(n) => *n += 1,
            None => {
                self.running.insert(job_type.clone(), 1);
            }
        }
        self.by_request.insert(job.request_id.clone(), job.seq);
        self.slots.insert(job.seq, (job.worker_id.clone(), job.request_id.clone()));
    }

    fn place_pending(&mut self, job: &Arc<Job>, now: i64) {
        let seq = job.seq;
        if job.spec.expires_at > 0 {
            self.expiries.insert((job.spec.expires_at, seq));
        }
        let ready_at = waits_until(job);
        if ready_at > now {
            self.delayed.insert((ready_at, seq));
        } else {
            job.queued_at.set(now);
            self.queue_of(&job.spec.job_type).insert((Reverse(job.spec.priority), seq));
        }
    }

    /// A job type's ready queue; the type's name is copied only for its first queue.
    fn queue_of(&mut self, job_type: &str) -> &mut BTreeSet<(Reverse<i32>, i64)> {
        if !self.queues.contains_key(job_type) {
            self.queues.insert(job_type.to_string(), BTreeSet::new());
        }
        self.queues.get_mut(job_type).expect("inserted above")
    }

    /// Moves delayed jobs whose time has come into their queues.
    pub fn promote(&mut self, now: i64) {
        while let Some(&(at, seq)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.remove(&(at, seq));
            if let Some(job) = self.active.get_mut(&seq) {
                let job = Arc::make_mut(job);
                job.ready_at = 0;
                job.queued_at.set(now);
                let spec = job.spec.clone();
                self.queue_of(&spec.job_type).insert((Reverse(spec.priority), seq));
            }
        }
    }

    /// Jobs whose expiry passed (taken off the expiry index; the caller expires them).
    pub fn due_expiries(&mut self, now: i64) -> Vec<i64> {
        let mut due = Vec::new();
        while let Some(&(at, seq)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, seq));
            due.push(seq);
        }
        due
    }

    /// Attempts whose deadline passed and is still current. Their entries stay in the
    /// index (the transition that follows takes them out like any other); stale ones
    /// (the attempt ended or got a new deadline) are dropped.
    pub fn due_deadlines(&mut self, now: i64) -> Vec<i64> {
        let passed: Vec<(i64, i64)> = self.deadlines.range(..=(now, i64::MAX)).copied().collect();
        let mut due = Vec::with_capacity(passed.len());
        for (at, seq) in passed {
            let current = self
                .active
                .get(&seq)
                .is_some_and(|j| j.deadline == at && matches!(j.state, JobState::Assigned | JobState::Running));
            if current {
                due.push(seq);
            } else {
                self.deadlines.remove(&(at, seq));
            }
        }
        due
    }

    /// The earliest time something is due: a delayed job, an expiry or a deadline.
    pub fn next_wake(&self) -> Option<i64> {
        [self.delayed.first(), self.expiries.first(), self.deadlines.first()].into_iter().flatten().map(|d| d.0).min()
    }

    fn release_slot(&mut self, seq: i64, job_type: &str) {
        let Some((worker_id, request_id)) = self.slots.remove(&seq) else { return };
        self.by_request.remove(&request_id);
        if let Some(m) = self.inflight.get_mut(&*worker_id) {
            if let Some(n) = m.get_mut(job_type) {
                *n -= 1;
                if *n <= 0 {
                    m.remove(job_type);
                }
            }
            if m.is_empty() {
                self.inflight.remove(&*worker_id);
            }
        }
        if let Some(n) = self.running.get_mut(job_type) {
            *n = (*n - 1).max(0);
        }
    }

    fn count(&mut self, job_type: &str, state: JobState, delta: i64) {
        let per_state = match self.counts.get_mut(job_type) {
            Some(c) => c,
            None => self.counts.entry(job_type.to_string()).or_default(),
        };
        if let Some(n) = per_state.get_mut(state as usize) {
            *n += delta;
        }
    }

    fn remember_final(&mut self, job: Arc<Job>) {
        self.recent_order.push_back(job.seq);
        self.recent.insert(job.seq, job);
        while self.recent_order.len() > RECENT_FINAL {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Puts back a finished job whose retry was refused.
    pub fn restore_recent(&mut self, job: Arc<Job>) {
        self.remember_final(job);
    }

    /// A recently finished job, taken out for an operator retry.
    pub fn take_recent(&mut self, seq: i64) -> Option<Arc<Job>> {
        self.recent.remove(&seq)
    }

    pub fn job(&self, seq: i64) -> Option<&Job> {
        self.active.get(&seq).or_else(|| self.recent.get(&seq)).map(|j| &**j)
    }

    pub fn is_active(&self, seq: i64) -> bool {
        self.active.contains_key(&seq)
    }

    /// The active job holding this dedupe key, if any.
    pub fn holder_of(&self, job_type: &str, dedupe_key: &str) -> Option<i64> {
        self.dedupe.candidates(job_type, dedupe_key).find(|seq| {
            self.active.get(seq).is_some_and(|j| j.spec.job_type == job_type && *j.spec.dedupe_key == *dedupe_key)
        })
    }

    /// Takes jobs deleted by retention out of the counts.
    pub fn forget_pruned(&mut self, pruned: &crate::store::Pruned) {
        for ((job_type, state), n) in pruned {
            if let Some(c) = self.counts.get_mut(job_type).and_then(|c| c.get_mut(*state as usize)) {
                *c = (*c - n).max(0);
            }
        }
    }

    /// (job_type, state, jobs) for every count there is.
    pub fn counts(&self) -> impl Iterator<Item = (&str, JobState, i64)> {
        self.counts.iter().flat_map(|(job_type, per_state)| {
            per_state.iter().enumerate().filter(|(_, n)| **n != 0).map(move |(state, n)| {
                (job_type.as_str(), JobState::try_from(state as i32).unwrap_or(JobState::Unspecified), *n)
            })
        })
    }

    pub fn count_of(&self, job_type: &str, state: JobState) -> i64 {
        self.counts.get(job_type).and_then(|c| c.get(state as usize)).copied().unwrap_or(0)
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Jobs out on executors (ASSIGNED or RUNNING).
    pub fn in_flight(&self) -> usize {
        self.by_request.len()
    }

    /// Whether a PENDING job sits in a ready queue or the delayed set (dispatchable).
    #[cfg(test)]
    pub fn is_placed(&self, seq: i64) -> bool {
        self.queues.values().any(|q| q.iter().any(|k| k.1 == seq)) || self.delayed.iter().any(|d| d.1 == seq)
    }

    /// Whether a PENDING job is in its ready queue or the delayed set: false only while its
    /// first write is not durable yet (see [`JobTable::make_ready`]).
    pub fn is_queued(&self, job: &Job) -> bool {
        let key = (Reverse(job.spec.priority), job.seq);
        self.delayed.contains(&(waits_until(job), job.seq))
            || self.queues.get(&job.spec.job_type).is_some_and(|q| q.contains(&key))
    }

    /// How many jobs are ahead of this one in its ready queue; `None` when it is not in it.
    pub fn ahead_of(&self, job: &Job) -> Option<usize> {
        let key = (Reverse(job.spec.priority), job.seq);
        let q = self.queues.get(&job.spec.job_type)?;
        q.contains(&key).then(|| q.range(..key).count())
    }

    /// The jobs out on executors (ASSIGNED or RUNNING), in no particular order.
    pub fn in_flight_jobs(&self) -> impl Iterator<Item = &Job> {
        self.by_request.values().filter_map(|seq| self.active.get(seq).map(|j| &**j))
    }

    pub fn request(&self, request_id: &str) -> Option<i64> {
        self.by_request.get(request_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: i64, not_before: i64, expires_at: i64) -> Arc<Job> {
        let mut spec = crate::test_support::spec(&format!("k{seq}"), 0);
        spec.not_before = not_before;
        spec.expires_at = expires_at;
        Arc::new(Job::pending(seq, spec, 0))
    }

    fn queued(t: &JobTable) -> Vec<i64> {
        t.queues.get("t").map(|q| q.iter().map(|k| k.1).collect()).unwrap_or_default()
    }

    #[test]
    fn a_job_with_not_before_waits_until_its_time_comes() {
        let mut t = JobTable::new(1, HashMap::new());
        t.insert_new(job(1, 5_000, 0));
        t.insert_new(job(2, 0, 0));
        t.make_ready(1, 1_000);
        t.make_ready(2, 1_000);
        assert_eq!(queued(&t), vec![2]);
        assert_eq!(t.next_wake(), Some(5_000));
        t.promote(4_999);
        assert_eq!(queued(&t), vec![2]);
        t.promote(5_000);
        assert_eq!(queued(&t), vec![1, 2]);
    }

    #[test]
    fn a_new_job_becomes_ready_without_being_copied() {
        let mut t = JobTable::new(1, HashMap::new());
        let created = job(1, 0, 0);
        // What the creation's store write and event still hold when the write commits.
        let snapshot = created.clone();
        t.insert_new(created);
        t.make_ready(1, 1_000);
        assert_eq!(queued(&t), vec![1]);
        let ready = t.active.get(&1).unwrap();
        assert!(Arc::ptr_eq(ready, &snapshot), "the ready job is the one the snapshot holds");
        assert_eq!(ready.queued_at.get(), 1_000, "the dispatch latency counts from here");
    }

    #[test]
    fn an_expiry_becomes_due_at_its_time_only() {
        let mut t = JobTable::new(1, HashMap::new());
        t.insert_new(job(1, 0, 9_000));
        t.make_ready(1, 1_000);
        assert_eq!(t.next_wake(), Some(9_000));
        assert!(t.due_expiries(8_999).is_empty());
        assert_eq!(t.due_expiries(9_000), vec![1]);
    }

    #[test]
    fn dedupe_keys_that_share_a_hash_are_all_kept_and_each_leaves_alone() {
        let mut d = DedupeIndex::default();
        let sorted = |d: &DedupeIndex, h| {
            let mut v: Vec<i64> = d.hashed(h).collect();
            v.sort_unstable();
            v
        };
        d.insert_hashed(7, 1);
        d.insert_hashed(7, 2);
        d.insert_hashed(7, 3);
        d.insert_hashed(7, 2);
        d.insert_hashed(8, 4);
        assert_eq!(sorted(&d, 7), [1, 2, 3]);
        // The first holder leaves: another takes its place.
        d.remove_hashed(7, 1);
        assert_eq!(sorted(&d, 7), [2, 3]);
        d.remove_hashed(7, 2);
        d.remove_hashed(7, 9);
        assert_eq!(sorted(&d, 7), [3]);
        d.remove_hashed(7, 3);
        assert_eq!(sorted(&d, 7), Vec::<i64>::new());
        assert!(d.by_hash.len() == 1 && d.collisions.is_empty(), "nothing left behind but job 4");
        assert_eq!(sorted(&d, 8), [4]);
    }

    #[test]
    fn a_new_job_is_counted_and_holds_its_dedupe_key_until_it_finishes() {
        let mut t = JobTable::new(1, HashMap::new());
        t.insert_new(job(1, 0, 0));
        assert_eq!(t.count_of("t", JobState::Pending), 1);
        assert_eq!(t.holder_of("t", "k1"), Some(1));
        let (mut j, placed) = t.take(1).unwrap();
        Arc::make_mut(&mut j).state = JobState::Canceled;
        t.put(j, placed, 10);
        assert_eq!(t.holder_of("t", "k1"), None);
        assert_eq!((t.count_of("t", JobState::Pending), t.count_of("t", JobState::Canceled)), (0, 1));
        assert_eq!(t.job(1).unwrap().state, JobState::Canceled, "recently finished jobs stay readable");
        assert!(!t.is_active(1));
    }
}
