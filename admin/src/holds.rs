//! Holds: an operator's "not now" that outlives a restart. A global pause of dispatch, a
//! global pause of all schedules, per job type a hold on detection and a hold on
//! dispatch, and drained workers. Each is a row of the state store, written in the same
//! batch as the command's audit event, and loaded at start; in memory they are one small
//! table read on the dispatch and scheduling paths.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use serde::Serialize;

/// What is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// No job of any type is started.
    Dispatch,
    /// No scheduled detection of any type runs (on-demand ones still do).
    Schedules,
    /// A job type detects nothing, scheduled or on demand.
    Detection,
    /// A job type's pending jobs stay pending; running ones finish.
    JobDispatch,
    /// A worker gets no new work and keeps its running jobs.
    Drain,
}

impl HoldKind {
    const ALL: [HoldKind; 5] =
        [HoldKind::Dispatch, HoldKind::Schedules, HoldKind::Detection, HoldKind::JobDispatch, HoldKind::Drain];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Dispatch => "dispatch",
            HoldKind::Schedules => "schedules",
            HoldKind::Detection => "detection",
            HoldKind::JobDispatch => "job_dispatch",
            HoldKind::Drain => "drain",
        }
    }

    pub fn parse(s: &str) -> Option<HoldKind> {
        Some(match s {
            "dispatch" => HoldKind::Dispatch,
            "schedules" => HoldKind::Schedules,
            "detection" => HoldKind::Detection,
            "job_dispatch" => HoldKind::JobDispatch,
            "drain" => HoldKind::Drain,
            _ => return None,
        })
    }
}

/// One active hold: what, on what (empty for the global ones), who set it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Hold {
    pub kind: HoldKind,
    pub target: String,
    pub set_by: String,
    pub set_at: i64,
}

/// The active holds; clones share them.
#[derive(Clone, Default)]
pub struct Holds {
    inner: Arc<RwLock<BTreeMap<(HoldKind, String), Hold>>>,
    /// Active holds per kind (indexed by `HoldKind as usize`): the dispatch path asks
    /// about every job type on every pass, and almost always nothing is held, so the
    /// answer then costs one atomic load.
    counts: Arc<[AtomicUsize; 5]>,
}

impl Holds {
    /// The holds the store kept.
    pub fn new(loaded: Vec<Hold>) -> Holds {
        let holds = Holds::default();
        {
            let mut map = holds.inner.write().expect("holds lock");
            for h in loaded {
                map.insert((h.kind, h.target.clone()), h);
            }
            for kind in HoldKind::ALL {
                holds.counts[kind as usize].store(map.keys().filter(|(k, _)| *k == kind).count(), Ordering::Relaxed);
            }
        }
        holds
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(HoldKind, String), Hold>> {
        self.inner.read().expect("holds lock")
    }

    /// The hold on `target` of this kind, if one is set.
    pub fn get(&self, kind: HoldKind, target: &str) -> Option<Hold> {
        if self.counts[kind as usize].load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.read().get(&(kind, target.to_string())).cloned()
    }

    pub fn is_held(&self, kind: HoldKind, target: &str) -> bool {
        self.counts[kind as usize].load(Ordering::Relaxed) > 0 && self.read().contains_key(&(kind, target.to_string()))
    }

    pub fn dispatch_paused(&self) -> bool {
        self.is_held(HoldKind::Dispatch, "")
    }

    pub fn schedules_paused(&self) -> bool {
        self.is_held(HoldKind::Schedules, "")
    }

    /// Sets (`Some`) or lifts (`None`) a hold in memory; the caller writes it to the store.
    /// Returns whether anything changed.
    pub fn apply(&self, kind: HoldKind, target: &str, hold: Option<Hold>) -> bool {
        let mut map = self.inner.write().expect("holds lock");
        let key = (kind, target.to_string());
        match hold {
            Some(h) => {
                if map.contains_key(&key) {
                    return false;
                }
                map.insert(key, h);
                self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
                true
            }
            None => {
                let removed = map.remove(&key).is_some();
                if removed {
                    self.counts[kind as usize].fetch_sub(1, Ordering::Relaxed);
                }
                removed
            }
        }
    }

    /// Every active hold, global ones first.
    pub fn list(&self) -> Vec<Hold> {
        self.read().values().cloned().collect()
    }

    /// Targets held with this kind.
    pub fn targets(&self, kind: HoldKind) -> Vec<String> {
        self.read().keys().filter(|(k, _)| *k == kind).map(|(_, t)| t.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(kind: HoldKind, target: &str) -> Hold {
        Hold { kind, target: target.into(), set_by: "ops".into(), set_at: 5 }
    }

    #[test]
    fn a_hold_is_set_once_lifted_once_and_keeps_who_set_it() {
        let holds = Holds::new(vec![hold(HoldKind::Dispatch, "")]);
        assert!(holds.dispatch_paused());
        assert!(!holds.apply(HoldKind::Dispatch, "", Some(hold(HoldKind::Dispatch, ""))), "already set");
        assert!(holds.apply(HoldKind::JobDispatch, "t", Some(hold(HoldKind::JobDispatch, "t"))));
        assert_eq!(holds.get(HoldKind::JobDispatch, "t").unwrap().set_by, "ops");
        assert!(!holds.is_held(HoldKind::JobDispatch, "u"));
        assert_eq!(holds.list().len(), 2);
        assert!(holds.apply(HoldKind::Dispatch, "", None));
        assert!(!holds.apply(HoldKind::Dispatch, "", None), "already lifted");
        assert!(!holds.dispatch_paused());
        assert_eq!(holds.targets(HoldKind::JobDispatch), vec!["t".to_string()]);
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [HoldKind::Dispatch, HoldKind::Schedules, HoldKind::Detection, HoldKind::JobDispatch, HoldKind::Drain]
        {
            assert_eq!(HoldKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(HoldKind::parse("nope"), None);
    }
}
