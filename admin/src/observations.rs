//! What workers observe about the objects their job types work on (`WorkerObservations`:
//! a table's fragment count, a volume's garbage ratio), kept so operators can see it, and
//! object previews on demand (`RequestObjectPreview` -> `ObjectPreviewResponse`).
//!
//! Observations are telemetry that workers send again as they look again, so they live in
//! memory, bounded: per job type at most [`MAX_OBJECTS_PER_TYPE`] objects (the least
//! recently observed go first), one entry per object (the newest), and only for job types
//! the sending worker offers, so a worker cannot grow the table with names of its own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::pb;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::{registry::WorkerSession, text::clip};

/// Objects kept per job type.
pub const MAX_OBJECTS_PER_TYPE: usize = 1000;
/// Rows of a preview kept and shown, as SeaweedFS's admin caps them.
pub const MAX_PREVIEW_ROWS: usize = 200;
/// Columns of a preview kept and shown.
pub const MAX_PREVIEW_COLUMNS: usize = 100;
/// How long the admin waits for a worker's preview.
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// One object's newest observation, as the API and the pages show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ObservationView {
    pub job_type: String,
    pub worker_id: String,
    /// The object's id path (a collection, a table, a fragment ...).
    pub object_id: Vec<String>,
    pub object_kind: String,
    pub format: String,
    /// Proto JSON of each attribute's `ConfigValue`.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// When the worker observed it (Unix ms; 0: it did not say).
    pub observed_at: i64,
    /// When the admin received it (Unix ms).
    pub received_at: i64,
}

/// A preview as the API and the pages show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PreviewView {
    pub worker_id: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// How many rows the object has, as the worker counts them.
    pub total_rows: i64,
    /// More rows (or columns) came than are kept.
    pub truncated: bool,
}

/// Why a preview could not be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreviewError {
    #[error("no connected worker offers job type {0:?}")]
    NoWorker(String),
    #[error("worker {0} is not reading its stream")]
    NotReading(String),
    #[error("worker {worker_id} did not answer the preview within {secs} s")]
    Timeout { worker_id: String, secs: u64 },
    #[error("worker {worker_id} could not preview the object: {message}")]
    Failed { worker_id: String, message: String },
}

#[derive(Default)]
struct Inner {
    /// job type -> object id path -> newest observation.
    by_type: HashMap<String, HashMap<Vec<String>, ObservationView>>,
    /// Preview request id -> (the worker asked, where its answer goes).
    pending: HashMap<String, (String, oneshot::Sender<pb::ObjectPreviewResponse>)>,
}

/// The observations and the previews in flight; clones share them.
#[derive(Clone, Default)]
pub struct Observations {
    inner: Arc<Mutex<Inner>>,
}

impl Observations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("observations lock")
    }

    /// Keeps a worker's observations (already checked against the input limits). Returns
    /// how many were refused because the worker does not offer their job type.
    pub fn record(&self, session: &WorkerSession, message: pb::WorkerObservations, now: i64) -> usize {
        if !session.capabilities.contains_key(&message.job_type) {
            return message.observations.len();
        }
        let mut inner = self.lock();
        let objects = inner.by_type.entry(message.job_type.clone()).or_default();
        for o in message.observations {
            let attributes = o
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), proto::json::to_value(v).unwrap_or(serde_json::Value::Null)))
                .collect();
            let view = ObservationView {
                job_type: message.job_type.clone(),
                worker_id: session.worker_id.clone(),
                object_id: o.object_id.clone(),
                object_kind: o.object_kind,
                format: o.format,
                attributes,
                observed_at: o.observed_at.as_ref().map(crate::job::timestamp_to_ms).unwrap_or(0),
                received_at: now,
            };
            objects.insert(o.object_id, view);
        }
        if objects.len() > MAX_OBJECTS_PER_TYPE {
            let mut ages: Vec<(i64, Vec<String>)> =
                objects.iter().map(|(k, v)| (v.received_at.max(v.observed_at), k.clone())).collect();
            ages.sort();
            for (_, key) in ages.into_iter().take(objects.len() - MAX_OBJECTS_PER_TYPE) {
                objects.remove(&key);
            }
        }
        0
    }

    /// Observations, newest first; of one job type and of objects whose id path starts
    /// with `object` (`a/b` is the path `["a", "b"]`) when given.
    pub fn list(&self, job_type: Option<&str>, object: Option<&[String]>) -> Vec<ObservationView> {
        let inner = self.lock();
        let mut out: Vec<ObservationView> = inner
            .by_type
            .iter()
            .filter(|(t, _)| job_type.is_none_or(|want| want == t.as_str()))
            .flat_map(|(_, objects)| objects.values())
            .filter(|v| object.is_none_or(|prefix| v.object_id.starts_with(prefix)))
            .cloned()
            .collect();
        out.sort_by(|a, b| (b.received_at, &a.object_id).cmp(&(a.received_at, &b.object_id)));
        out
    }

    /// The worker that last observed this object, if it did.
    pub fn observer(&self, job_type: &str, object: &[String]) -> Option<String> {
        self.lock().by_type.get(job_type)?.get(object).map(|v| v.worker_id.clone())
    }

    /// Asks `session` for a preview and waits for its answer.
    pub async fn preview(
        &self,
        session: &Arc<WorkerSession>,
        request_id: String,
        request: pb::RequestObjectPreview,
        send_timeout: Duration,
    ) -> Result<PreviewView, PreviewError> {
        let (tx, rx) = oneshot::channel();
        self.lock().pending.insert(request_id.clone(), (session.worker_id.clone(), tx));
        let message =
            crate::wire::envelope(&request_id, pb::admin_to_worker_message::Body::RequestObjectPreview(request));
        if !session.send(message, send_timeout) {
            self.lock().pending.remove(&request_id);
            return Err(PreviewError::NotReading(session.worker_id.clone()));
        }
        let answer = tokio::time::timeout(PREVIEW_TIMEOUT, rx).await;
        self.lock().pending.remove(&request_id);
        let worker_id = session.worker_id.clone();
        match answer {
            Ok(Ok(r)) if r.success => Ok(shown(worker_id, r)),
            Ok(Ok(r)) => Err(PreviewError::Failed { worker_id, message: clip(&r.error_message, 500) }),
            Ok(Err(_)) | Err(_) => Err(PreviewError::Timeout { worker_id, secs: PREVIEW_TIMEOUT.as_secs() }),
        }
    }

    /// A worker's preview answer: handed to the request waiting for it. False when no
    /// request of that worker waits for it (late, or not ours).
    pub fn on_preview(&self, session: &WorkerSession, response: pb::ObjectPreviewResponse) -> bool {
        let mut inner = self.lock();
        let ours = inner.pending.get(&response.request_id).is_some_and(|(w, _)| *w == session.worker_id);
        if !ours {
            return false;
        }
        let (_, tx) = inner.pending.remove(&response.request_id).expect("checked above");
        tx.send(response).is_ok()
    }
}

/// A preview cut to what is kept: [`MAX_PREVIEW_ROWS`] rows, [`MAX_PREVIEW_COLUMNS`]
/// columns, each value clipped.
fn shown(worker_id: String, r: pb::ObjectPreviewResponse) -> PreviewView {
    let truncated = r.rows.len() > MAX_PREVIEW_ROWS || r.columns.len() > MAX_PREVIEW_COLUMNS;
    let cell = |v: &String| clip(v, 1000);
    PreviewView {
        worker_id,
        columns: r.columns.iter().take(MAX_PREVIEW_COLUMNS).map(cell).collect(),
        rows: r
            .rows
            .iter()
            .take(MAX_PREVIEW_ROWS)
            .map(|row| row.values.iter().take(MAX_PREVIEW_COLUMNS).map(cell).collect())
            .collect(),
        total_rows: r.total_rows,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Rig;

    fn observation(id: &[&str], fragments: i64) -> pb::ObjectObservation {
        pb::ObjectObservation {
            object_id: id.iter().map(|s| s.to_string()).collect(),
            object_kind: "table".into(),
            format: "lance".into(),
            attributes: [("fragments".to_string(), crate::test_support::cv::i(fragments))].into(),
            observed_at: Some(crate::job::ms_to_timestamp(Rig::T0 - 5)),
        }
    }

    #[tokio::test]
    async fn the_newest_observation_per_object_is_kept_for_offered_job_types_only() {
        let rig = Rig::new(|_| {});
        let w = rig.worker("w1", 1);
        let o = Observations::default();
        let batch = |job_type: &str, list| pb::WorkerObservations { job_type: job_type.into(), observations: list };
        assert_eq!(
            o.record(&w.session, batch("t", vec![observation(&["db", "a"], 12), observation(&["db", "b"], 3)]), 1),
            0
        );
        assert_eq!(o.record(&w.session, batch("t", vec![observation(&["db", "a"], 1)]), 2), 0);
        assert_eq!(o.record(&w.session, batch("not_offered", vec![observation(&["x"], 1)]), 3), 1);
        let all = o.list(None, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].object_id, vec!["db", "a"], "newest first");
        assert_eq!(all[0].attributes["fragments"], serde_json::json!({ "int64_value": "1" }));
        assert_eq!(all[0].observed_at, Rig::T0 - 5);
        assert_eq!(o.list(Some("t"), Some(&["db".to_string(), "b".to_string()])).len(), 1);
        assert!(o.list(Some("other"), None).is_empty());
        assert_eq!(o.observer("t", &["db".to_string(), "a".to_string()]).as_deref(), Some("w1"));
    }

    #[tokio::test]
    async fn each_job_type_keeps_at_most_its_bound_of_objects_the_oldest_going_first() {
        let rig = Rig::new(|_| {});
        let w = rig.worker("w1", 1);
        let o = Observations::default();
        let list: Vec<pb::ObjectObservation> =
            (0..MAX_OBJECTS_PER_TYPE + 5).map(|i| observation(&[&i.to_string()], 1)).collect();
        o.record(&w.session, pb::WorkerObservations { job_type: "t".into(), observations: list }, 1);
        o.record(
            &w.session,
            pb::WorkerObservations { job_type: "t".into(), observations: vec![observation(&["new"], 1)] },
            2,
        );
        let kept = o.list(Some("t"), None);
        assert_eq!(kept.len(), MAX_OBJECTS_PER_TYPE);
        assert_eq!(kept[0].object_id, vec!["new"]);
    }

    #[tokio::test]
    async fn a_preview_reaches_its_worker_and_its_answer_comes_back_capped() {
        let rig = Rig::new(|_| {});
        let mut w = rig.worker("w1", 1);
        let o = Observations::default();
        let session = w.session.clone();
        let asked = {
            let o = o.clone();
            tokio::spawn(async move {
                let request =
                    pb::RequestObjectPreview { object_id: vec!["db".into()], format: "lance".into(), row_limit: 5 };
                o.preview(&session, "p1".into(), request, Duration::from_secs(1)).await
            })
        };
        let message = w.next().await;
        assert_eq!(message.request_id, "p1");
        assert!(matches!(message.body, Some(pb::admin_to_worker_message::Body::RequestObjectPreview(_))));
        let other = rig.worker("w2", 1);
        let answer = pb::ObjectPreviewResponse {
            success: true,
            columns: vec!["id".into()],
            rows: (0..250).map(|i| pb::PreviewRow { values: vec![i.to_string()] }).collect(),
            total_rows: 250,
            request_id: "p1".into(),
            ..Default::default()
        };
        assert!(!o.on_preview(&other.session, answer.clone()), "another worker cannot answer for w1");
        assert!(o.on_preview(&w.session, answer.clone()));
        let view = asked.await.unwrap().unwrap();
        assert_eq!((view.rows.len(), view.total_rows, view.truncated), (MAX_PREVIEW_ROWS, 250, true));
        assert!(!o.on_preview(&w.session, answer), "a late duplicate is not ours");
    }
}
