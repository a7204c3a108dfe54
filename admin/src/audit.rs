//! The audit trail: one event per operator command, done or refused, with who asked,
//! what for, with which parameters (sensitive values redacted) and the request that
//! carried it. Events are rows of the state store, written in the same batch (one
//! transaction) as the command's effect (see [`crate::commands`]); a command is answered
//! only once its event is durable.
//!
//! Retention keeps the trail bounded by age and by count; pruned events are first
//! appended to a JSONL archive file when an archive directory is configured.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{
    clock::SharedClock,
    commands::Actor,
    store::{Op, Store, StoreError},
};

/// One audited command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// The API token's name, the client certificate identity's name, `ui:<name>` for a
    /// page session, or `local` when authentication is off.
    pub actor: String,
    /// `token`, `certificate`, `session` or `local`.
    pub actor_kind: String,
    pub action: String,
    /// What the command acted on: a job id, a job type, a worker id, a token name, or
    /// `dispatch` / `schedules` for the global pauses.
    pub target: String,
    /// The command's parameters, sensitive values redacted.
    pub params: serde_json::Value,
    /// `done` or `refused`.
    pub outcome: String,
    /// Why a refused command was refused.
    pub reason: String,
    pub request_id: String,
}

/// Filters for listing audit events, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub target: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Only events older than this id (keyset paging).
    pub before_id: Option<i64>,
    pub limit: usize,
}

impl AuditQuery {
    /// 1..=[`crate::store::MAX_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, crate::store::MAX_PAGE)
    }
}

/// How an actor is named in the trail: (actor, actor_kind).
pub fn actor_names(actor: &Actor) -> (String, &'static str) {
    match actor {
        Actor::Local(_) => ("local".into(), "local"),
        Actor::Token { name, .. } => (name.clone(), "token"),
        Actor::Certificate { subject, .. } => (subject.clone(), "certificate"),
        Actor::Session { user, .. } => (format!("ui:{user}"), "session"),
    }
}

/// Bounds on the trail.
#[derive(Debug, Clone)]
pub struct AuditRetention {
    /// Events older than this many days are pruned; 0 keeps them by age.
    pub days: u32,
    /// At most this many events are kept; 0 keeps any number.
    pub max_events: u64,
    /// Pruned events are appended here first, as JSONL.
    pub archive_dir: Option<PathBuf>,
}

/// The audit trail's handle: hands out event ids and queues events.
#[derive(Clone)]
pub struct AuditTrail {
    store: Arc<Store>,
    clock: SharedClock,
    next_id: Arc<AtomicI64>,
}

/// An event before it has an id and a time.
pub struct Entry<'a> {
    pub actor: &'a Actor,
    pub action: &'static str,
    pub target: String,
    pub params: serde_json::Value,
    /// None: done; Some(reason): refused.
    pub refused: Option<String>,
    pub request_id: &'a str,
}

impl AuditTrail {
    /// `next_id` continues the store's audit ids.
    pub fn new(store: Arc<Store>, clock: SharedClock, next_id: i64) -> AuditTrail {
        AuditTrail { store, clock, next_id: Arc::new(AtomicI64::new(next_id)) }
    }

    /// Queues an event; returns the store ticket to wait on before answering.
    pub fn record(&self, entry: Entry<'_>) -> u64 {
        let (actor, actor_kind) = actor_names(entry.actor);
        let outcome = if entry.refused.is_some() { "refused" } else { "done" };
        let event = AuditEvent {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at: self.clock.now_ms(),
            actor,
            actor_kind: actor_kind.into(),
            action: entry.action.into(),
            target: entry.target,
            params: entry.params,
            outcome: outcome.into(),
            reason: entry.refused.unwrap_or_default(),
            request_id: entry.request_id.into(),
        };
        self.store.write(Op::Audit(Box::new(event)))
    }

    /// Prunes what is beyond `retention`, archiving it first when asked. Returns how many
    /// events were pruned.
    pub async fn prune(&self, retention: &AuditRetention) -> Result<i64, StoreError> {
        self.store.settle().await;
        let before_ms = (retention.days > 0).then(|| self.clock.now_ms() - i64::from(retention.days) * 86_400_000);
        let keep = (retention.max_events > 0).then(|| i64::try_from(retention.max_events).unwrap_or(i64::MAX));
        let Some((up_to, count)) = self.store.audit_cutoff(before_ms, keep)? else {
            return Ok(0);
        };
        if let Some(dir) = &retention.archive_dir {
            self.archive(dir, up_to)?;
        }
        let ticket = self.store.write(Op::PruneAudit { up_to_id: up_to });
        self.store.durable(ticket).await?;
        tracing::info!(up_to_id = up_to, count, archived = retention.archive_dir.is_some(), "audit events pruned");
        Ok(count)
    }

    /// Appends events with ids up to `up_to` (oldest first) to a new JSONL file in `dir`,
    /// synced before anything is deleted. Returns how many were written.
    fn archive(&self, dir: &Path, up_to: i64) -> Result<i64, StoreError> {
        let io = |source| StoreError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut first = None;
        let mut last = 0;
        let tmp = dir.join(format!(".audit-{up_to}.jsonl.partial"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut after = 0;
        let mut written = 0i64;
        loop {
            let page = self.store.audit_oldest(after, up_to, crate::store::MAX_PAGE)?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                first.get_or_insert(e.id);
                last = e.id;
                serde_json::to_writer(&mut out, e).map_err(|e| io(std::io::Error::other(e)))?;
                out.write_all(b"\n").map_err(io)?;
                written += 1;
            }
            after = last;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        match first {
            Some(first) => {
                let name = dir.join(format!("audit-{first:012}-{last:012}.jsonl"));
                std::fs::rename(&tmp, &name).map_err(io)?;
                crate::fsutil::sync_dir(dir).map_err(io)?;
            }
            None => {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{auth::Role, test_support::Rig};

    fn record(trail: &AuditTrail, actor: &Actor, n: usize) -> u64 {
        let mut ticket = 0;
        for i in 0..n {
            ticket = trail.record(Entry {
                actor,
                action: "cancel_job",
                target: format!("j{i}"),
                params: serde_json::json!({ "i": i }),
                refused: None,
                request_id: "r",
            });
        }
        ticket
    }

    #[tokio::test]
    async fn retention_prunes_by_count_and_by_age_archiving_what_it_prunes() {
        let rig = Rig::new(|_| {});
        let trail = rig.c.audit.clone();
        let ops = Actor::Token { name: "ops".into(), role: Role::Operator };
        record(&trail, &ops, 5);
        rig.clock.advance(3 * 86_400_000);
        let t = record(&trail, &ops, 5);
        rig.c.store.durable(t).await.unwrap();
        let archive = crate::test_support::TempDir::new("audit-archive");
        let by_count = AuditRetention { days: 0, max_events: 8, archive_dir: Some(archive.0.clone()) };
        assert_eq!(trail.prune(&by_count).await.unwrap(), 2);
        let files: Vec<_> = std::fs::read_dir(&archive.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, vec![std::ffi::OsString::from("audit-000000000001-000000000002.jsonl")]);
        let text = std::fs::read_to_string(archive.0.join(&files[0])).unwrap();
        let archived: Vec<AuditEvent> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(archived.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(archived[0].params["i"], 0);

        let by_age = AuditRetention { days: 2, max_events: 0, archive_dir: None };
        assert_eq!(trail.prune(&by_age).await.unwrap(), 3, "the rest of the three-day-old events");
        let left = rig.c.store.audit(&AuditQuery { limit: 100, ..Default::default() }).unwrap();
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), vec![10, 9, 8, 7, 6]);
        assert_eq!(trail.prune(&by_age).await.unwrap(), 0, "nothing more to go");

        // Pruned ids are never handed out again, even when the newest went.
        let everything = AuditRetention { days: 0, max_events: 1, archive_dir: None };
        assert_eq!(trail.prune(&everything).await.unwrap(), 4);
        let rig = rig.restart();
        let t = record(&rig.c.audit, &ops, 1);
        rig.c.store.durable(t).await.unwrap();
        let ids: Vec<i64> =
            rig.c.store.audit(&AuditQuery { limit: 10, ..Default::default() }).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![11, 10]);
    }

    #[tokio::test]
    async fn audit_queries_filter_and_page_newest_first() {
        let rig = Rig::new(|_| {});
        let trail = rig.c.audit.clone();
        let ops = Actor::Token { name: "ops".into(), role: Role::Operator };
        let ui = Actor::Session { user: "alice".into(), role: Role::Admin };
        record(&trail, &ops, 3);
        rig.clock.advance(1000);
        let t = record(&trail, &ui, 2);
        rig.c.store.durable(t).await.unwrap();
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery { limit: 100, ..Default::default() };
            f(&mut q);
            rig.c.store.audit(&q).unwrap().iter().map(|e| e.id).collect::<Vec<_>>()
        };
        assert_eq!(q(|q| q.actor = Some("ui:alice".into())), vec![5, 4]);
        assert_eq!(q(|q| q.target = Some("j1".into())), vec![5, 2]);
        assert_eq!(q(|q| q.since = Some(Rig::T0 + 1000)), vec![5, 4]);
        assert_eq!(q(|q| q.until = Some(Rig::T0 + 1000)), vec![3, 2, 1]);
        assert_eq!(q(|q| q.outcome = Some("refused".into())), Vec::<i64>::new());
        assert_eq!(
            q(|q| {
                q.limit = 2;
                q.before_id = Some(4)
            }),
            vec![3, 2]
        );
        assert_eq!(
            rig.c.store.audit_count(&AuditQuery { action: Some("cancel_job".into()), ..Default::default() }).unwrap(),
            5
        );
        let session = rig.c.store.audit(&AuditQuery { limit: 1, ..Default::default() }).unwrap();
        assert_eq!((session[0].actor.as_str(), session[0].actor_kind.as_str()), ("ui:alice", "session"));
    }
}
