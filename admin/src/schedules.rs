//! Cron schedules: a job type detects on a cron expression in a time zone instead of
//! every N minutes. Parsing and the calendar arithmetic are croner's and chrono-tz's;
//! this module checks what an operator typed (5 or 6 fields, a known time zone), keeps
//! the schedules the store holds, and answers when each fires next.
//!
//! A job type without a cron schedule detects on the interval of its runtime config.
//! After downtime (or a pause) a cron schedule fires once, not once per missed slot: the
//! next fire time is the first slot after the last fire, and firing moves the last fire
//! to now.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

/// A cron schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronSchedule {
    pub job_type: String,
    pub cron: String,
    pub time_zone: String,
    pub set_by: String,
    pub set_at: i64,
    /// When it last fired (Unix ms; 0: never).
    pub last_fired_at: i64,
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Cron { expr: String, reason: String },
    #[error("time zone {0:?} is unknown (use an IANA name such as \"Europe/Berlin\" or \"UTC\")")]
    TimeZone(String),
    #[error("interval_minutes must be between 1 and {max}, not {got}")]
    Interval { got: i64, max: i64 },
    #[error("a schedule is either {{\"cron\": ..., \"time_zone\": ...}} or {{\"interval_minutes\": ...}}: {0}")]
    Shape(String),
}

/// The longest interval a schedule may have: a year, as the runtime form allows.
pub const MAX_INTERVAL_MINUTES: i64 = 525_600;

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl CronSpec {
    /// Parses `expr` (5 fields: minute hour day-of-month month day-of-week, or 6 with
    /// seconds first; or a nickname such as `@daily`) in the IANA time zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<CronSpec, ScheduleError> {
        let bad = |reason: String| ScheduleError::Cron { expr: expr.to_string(), reason };
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if trimmed.len() > 200 {
            return Err(bad("it is longer than 200 characters".into()));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(bad(format!(
                "it has {fields} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
            )));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(trimmed).map_err(|e| bad(e.to_string()))?;
        let tz: chrono_tz::Tz = tz.trim().parse().map_err(|_| ScheduleError::TimeZone(tz.to_string()))?;
        let spec = CronSpec { cron, tz };
        // A pattern that parses but never matches (30 February) is refused too.
        if spec.next_after(Utc::now().timestamp_millis()).is_none() {
            return Err(bad("it never fires".into()));
        }
        Ok(spec)
    }

    fn at(&self, ms: i64) -> Option<DateTime<chrono_tz::Tz>> {
        Some(Utc.timestamp_millis_opt(ms).single()?.with_timezone(&self.tz))
    }

    /// The first slot strictly after `ms` (Unix ms).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let next = self.cron.find_next_occurrence(&self.at(ms)?, false).ok()?;
        Some(next.timestamp_millis())
    }
}

/// The cron schedules; clones share them.
#[derive(Clone, Default)]
pub struct Schedules {
    inner: Arc<RwLock<HashMap<String, (CronSchedule, CronSpec)>>>,
}

impl Schedules {
    /// The schedules the store kept; one that no longer parses (a time zone renamed in a
    /// newer database) is skipped with a warning and its type falls back to its interval.
    pub fn new(loaded: Vec<CronSchedule>) -> Schedules {
        let s = Schedules::default();
        for row in loaded {
            match CronSpec::parse(&row.cron, &row.time_zone) {
                Ok(spec) => {
                    s.inner.write().expect("schedules lock").insert(row.job_type.clone(), (row, spec));
                }
                Err(e) => tracing::warn!(job_type = %row.job_type, error = %e, "a stored cron schedule is ignored"),
            }
        }
        s
    }

    pub fn get(&self, job_type: &str) -> Option<CronSchedule> {
        self.inner.read().expect("schedules lock").get(job_type).map(|(row, _)| row.clone())
    }

    pub fn list(&self) -> Vec<CronSchedule> {
        let mut rows: Vec<CronSchedule> =
            self.inner.read().expect("schedules lock").values().map(|(r, _)| r.clone()).collect();
        rows.sort_by(|a, b| a.job_type.cmp(&b.job_type));
        rows
    }

    /// Sets a schedule already parsed by the caller.
    pub fn set(&self, row: CronSchedule, spec: CronSpec) {
        self.inner.write().expect("schedules lock").insert(row.job_type.clone(), (row, spec));
    }

    pub fn remove(&self, job_type: &str) -> Option<CronSchedule> {
        self.inner.write().expect("schedules lock").remove(job_type).map(|(row, _)| row)
    }

    /// When the type's cron schedule fires next: the first slot after its last fire (or
    /// after it was set). None for a type without one.
    pub fn next_fire(&self, job_type: &str) -> Option<i64> {
        let map = self.inner.read().expect("schedules lock");
        let (row, spec) = map.get(job_type)?;
        spec.next_after(row.last_fired_at.max(row.set_at))
    }

    /// Records a fire at `at`; the next slot is then the first one after `at`.
    pub fn fired(&self, job_type: &str, at: i64) {
        if let Some((row, _)) = self.inner.write().expect("schedules lock").get_mut(job_type) {
            row.last_fired_at = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    #[test]
    fn five_and_six_field_expressions_fire_in_their_time_zone() {
        let daily = CronSpec::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(daily.next_after(ms("2026-01-10T00:00:00Z")), Some(ms("2026-01-10T02:00:00Z")));
        assert_eq!(daily.next_after(ms("2026-01-10T02:00:00Z")), Some(ms("2026-01-11T02:00:00Z")), "strictly after");
        // And 01:00 UTC in summer.
        assert_eq!(daily.next_after(ms("2026-07-10T00:00:00Z")), Some(ms("2026-07-10T01:00:00Z")));
        let seconds = CronSpec::parse("30 */15 * * * *", "UTC").unwrap();
        assert_eq!(seconds.next_after(ms("2026-01-10T00:00:00Z")), Some(ms("2026-01-10T00:00:30Z")));
        let nickname = CronSpec::parse("@hourly", "UTC").unwrap();
        assert_eq!(nickname.next_after(ms("2026-01-10T00:10:00Z")), Some(ms("2026-01-10T01:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        let e = CronSpec::parse("61 * * * *", "UTC").unwrap_err();
        assert!(matches!(&e, ScheduleError::Cron { expr, .. } if expr == "61 * * * *"), "{e}");
        let e = CronSpec::parse("* * *", "UTC").unwrap_err().to_string();
        assert!(e.contains("3 fields") && e.contains("expected 5"), "{e}");
        let e = CronSpec::parse("0 0 * * * * 2030", "UTC").unwrap_err().to_string();
        assert!(e.contains("7 fields"), "{e}");
        assert!(CronSpec::parse("", "UTC").unwrap_err().to_string().contains("empty"));
        assert_eq!(
            CronSpec::parse("0 3 * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
        let never = CronSpec::parse("0 0 30 2 *", "UTC").unwrap_err().to_string();
        assert!(never.contains("never fires"), "{never}");
    }

    #[test]
    fn after_downtime_a_schedule_fires_once_then_keeps_its_slots() {
        let set_at = ms("2026-01-10T00:00:00Z");
        let row = CronSchedule {
            job_type: "t".into(),
            cron: "0 * * * *".into(),
            time_zone: "UTC".into(),
            set_by: "ops".into(),
            set_at,
            last_fired_at: 0,
        };
        let spec = CronSpec::parse(&row.cron, &row.time_zone).unwrap();
        let s = Schedules::default();
        s.set(row, spec);
        assert_eq!(s.next_fire("t"), Some(ms("2026-01-10T01:00:00Z")));
        // Down from 00:30 to 05:10: the 01:00 slot is due (once); firing at 05:10 moves
        // the next one to 06:00, skipping 02:00..05:00.
        let now = ms("2026-01-10T05:10:00Z");
        assert!(s.next_fire("t").unwrap() <= now);
        s.fired("t", now);
        assert_eq!(s.next_fire("t"), Some(ms("2026-01-10T06:00:00Z")));
        assert_eq!(s.get("t").unwrap().last_fired_at, now);
        assert!(s.remove("t").is_some());
        assert_eq!(s.next_fire("t"), None);
    }
}
