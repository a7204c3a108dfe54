//! The effective admin runtime settings of a job type, and the fallback table used when
//! neither the operator nor the worker's descriptor says otherwise.
//!
//! Where a value comes from, first match wins: the saved config's `admin_runtime`, the
//! descriptor's `admin_runtime_defaults`, [`fallback()`]. Whatever the source, the result
//! goes through [`fill()`], so a zero in a field where zero means nothing useful (an
//! interval of 0 minutes, a timeout of 0 seconds) never reaches the scheduler.
//!
//! | field                              | fallback | why |
//! |------------------------------------|----------|-----|
//! | `enabled`                          | true     | a job type a worker offers is meant to run; the operator can switch it off |
//! | `detection_interval_minutes`       | 10       | frequent enough to notice work, cheap enough for a detector that scans a cluster |
//! | `detection_timeout_seconds`        | 60       | a scan that takes longer is stuck more often than it is slow |
//! | `max_jobs_per_detection`           | 1000     | one detection cannot flood the queue; the next round picks up the rest |
//! | `global_execution_concurrency`     | 64       | per job type, across all workers: bounds the load one job type puts on the cluster |
//! | `per_worker_execution_concurrency` | 0        | 0 = no per-worker cap: a worker is limited only by the slots it advertises |
//! | `retry_limit`                      | 3        | transient failures get a few chances, a broken job is dead-lettered soon |
//! | `retry_backoff_seconds`            | 10       | long enough for a restarted worker or a flapping peer to settle |
//! | `job_type_max_runtime_seconds`     | 0        | 0 = no limit on a job's total runtime across attempts |
//! | `execution_timeout_seconds`        | 3600     | per attempt: generous for bulk work, but a hung attempt is eventually cancelled |

use proto::pb;

/// The admin's fallback runtime settings (see the table in the module docs).
pub fn fallback() -> pb::AdminRuntimeConfig {
    pb::AdminRuntimeConfig {
        enabled: true,
        detection_interval_minutes: 10,
        detection_timeout_seconds: 60,
        max_jobs_per_detection: 1000,
        global_execution_concurrency: 64,
        per_worker_execution_concurrency: 0,
        retry_limit: 3,
        retry_backoff_seconds: 10,
        job_type_max_runtime_seconds: 0,
        execution_timeout_seconds: 3600,
    }
}

/// The runtime defaults a descriptor declares (else [`fallback()`]), through [`fill()`].
pub fn defaults_from_descriptor(d: &pb::JobTypeDescriptor) -> pb::AdminRuntimeConfig {
    match &d.admin_runtime_defaults {
        Some(defaults) => fill(from_defaults(defaults)),
        None => fill(fallback()),
    }
}

/// Replaces values that would make no sense with the fallback.
///
/// Zero or negative in `detection_interval_minutes`, `detection_timeout_seconds`,
/// `max_jobs_per_detection`, `global_execution_concurrency`, `retry_backoff_seconds` and
/// `execution_timeout_seconds` becomes the fallback value: a zero there is what a
/// descriptor or an old config that never set the field looks like on the wire.
/// `enabled` is kept as given. `retry_limit`, `per_worker_execution_concurrency` and
/// `job_type_max_runtime_seconds` keep zero (no retries, no per-worker cap, no limit);
/// only a negative value there, which has no meaning, becomes 0.
pub fn fill(r: pb::AdminRuntimeConfig) -> pb::AdminRuntimeConfig {
    let fb = fallback();
    let positive = |v: i32, fallback: i32| if v > 0 { v } else { fallback };
    pb::AdminRuntimeConfig {
        enabled: r.enabled,
        detection_interval_minutes: positive(r.detection_interval_minutes, fb.detection_interval_minutes),
        detection_timeout_seconds: positive(r.detection_timeout_seconds, fb.detection_timeout_seconds),
        max_jobs_per_detection: positive(r.max_jobs_per_detection, fb.max_jobs_per_detection),
        global_execution_concurrency: positive(r.global_execution_concurrency, fb.global_execution_concurrency),
        per_worker_execution_concurrency: r.per_worker_execution_concurrency.max(0),
        retry_limit: r.retry_limit.max(0),
        retry_backoff_seconds: positive(r.retry_backoff_seconds, fb.retry_backoff_seconds),
        job_type_max_runtime_seconds: r.job_type_max_runtime_seconds.max(0),
        execution_timeout_seconds: positive(r.execution_timeout_seconds, fb.execution_timeout_seconds),
    }
}

/// The runtime settings the scheduler and dispatcher use: the saved config's, else the
/// descriptor's defaults, else [`fallback()`]; always through [`fill()`].
pub fn effective(
    descriptor: Option<&pb::JobTypeDescriptor>,
    config: Option<&pb::PersistedJobTypeConfig>,
) -> pb::AdminRuntimeConfig {
    if let Some(saved) = config.and_then(|c| c.admin_runtime) {
        return fill(saved);
    }
    match descriptor {
        Some(d) => defaults_from_descriptor(d),
        None => fill(fallback()),
    }
}

/// The descriptor's defaults as a config (the two messages have the same ten fields).
fn from_defaults(d: &pb::AdminRuntimeDefaults) -> pb::AdminRuntimeConfig {
    pb::AdminRuntimeConfig {
        enabled: d.enabled,
        detection_interval_minutes: d.detection_interval_minutes,
        detection_timeout_seconds: d.detection_timeout_seconds,
        max_jobs_per_detection: d.max_jobs_per_detection,
        global_execution_concurrency: d.global_execution_concurrency,
        per_worker_execution_concurrency: d.per_worker_execution_concurrency,
        retry_limit: d.retry_limit,
        retry_backoff_seconds: d.retry_backoff_seconds,
        job_type_max_runtime_seconds: d.job_type_max_runtime_seconds,
        execution_timeout_seconds: d.execution_timeout_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor_with(defaults: Option<pb::AdminRuntimeDefaults>) -> pb::JobTypeDescriptor {
        pb::JobTypeDescriptor { job_type: "vacuum".into(), admin_runtime_defaults: defaults, ..Default::default() }
    }

    #[test]
    fn the_fallback_table_has_the_documented_values() {
        let f = fallback();
        assert!(f.enabled);
        assert_eq!(f.detection_interval_minutes, 10);
        assert_eq!(f.detection_timeout_seconds, 60);
        assert_eq!(f.max_jobs_per_detection, 1000);
        assert_eq!(f.global_execution_concurrency, 64);
        assert_eq!(f.per_worker_execution_concurrency, 0);
        assert_eq!(f.retry_limit, 3);
        assert_eq!(f.retry_backoff_seconds, 10);
        assert_eq!(f.job_type_max_runtime_seconds, 0);
        assert_eq!(f.execution_timeout_seconds, 3600);
    }

    #[test]
    fn fill_leaves_the_fallback_unchanged() {
        assert_eq!(fill(fallback()), fallback());
    }

    #[test]
    fn fill_replaces_meaningless_zeros_and_negatives_with_the_fallback() {
        let filled = fill(pb::AdminRuntimeConfig {
            enabled: false,
            detection_interval_minutes: 0,
            detection_timeout_seconds: -5,
            max_jobs_per_detection: 0,
            global_execution_concurrency: -1,
            per_worker_execution_concurrency: 0,
            retry_limit: 0,
            retry_backoff_seconds: 0,
            job_type_max_runtime_seconds: 0,
            execution_timeout_seconds: 0,
        });
        assert_eq!(filled, pb::AdminRuntimeConfig { enabled: false, retry_limit: 0, ..fallback() });
    }

    #[test]
    fn fill_keeps_meaningful_zeros_and_turns_negatives_into_zero() {
        let filled = fill(pb::AdminRuntimeConfig {
            per_worker_execution_concurrency: -3,
            retry_limit: -1,
            job_type_max_runtime_seconds: -7,
            ..fallback()
        });
        assert_eq!(filled.per_worker_execution_concurrency, 0);
        assert_eq!(filled.retry_limit, 0);
        assert_eq!(filled.job_type_max_runtime_seconds, 0);
    }

    #[test]
    fn fill_keeps_positive_values_as_given() {
        let custom = pb::AdminRuntimeConfig {
            enabled: true,
            detection_interval_minutes: 1,
            detection_timeout_seconds: 2,
            max_jobs_per_detection: 3,
            global_execution_concurrency: 4,
            per_worker_execution_concurrency: 5,
            retry_limit: 6,
            retry_backoff_seconds: 7,
            job_type_max_runtime_seconds: 8,
            execution_timeout_seconds: 9,
        };
        assert_eq!(fill(custom), custom);
    }

    #[test]
    fn descriptor_defaults_are_used_and_filled() {
        let d = descriptor_with(Some(pb::AdminRuntimeDefaults {
            enabled: true,
            detection_interval_minutes: 30,
            retry_limit: 5,
            ..Default::default()
        }));
        let r = defaults_from_descriptor(&d);
        assert_eq!(r.detection_interval_minutes, 30);
        assert_eq!(r.retry_limit, 5);
        assert_eq!(r.detection_timeout_seconds, 60);
        assert_eq!(r.execution_timeout_seconds, 3600);
    }

    #[test]
    fn a_descriptor_without_runtime_defaults_gets_the_fallback() {
        assert_eq!(defaults_from_descriptor(&descriptor_with(None)), fallback());
    }

    #[test]
    fn effective_prefers_the_saved_config_then_the_descriptor_then_the_fallback() {
        let d = descriptor_with(Some(pb::AdminRuntimeDefaults {
            enabled: true,
            detection_interval_minutes: 30,
            ..Default::default()
        }));
        let saved = pb::PersistedJobTypeConfig {
            job_type: "vacuum".into(),
            admin_runtime: Some(pb::AdminRuntimeConfig {
                enabled: true,
                detection_interval_minutes: 5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let without_runtime = pb::PersistedJobTypeConfig { job_type: "vacuum".into(), ..Default::default() };

        assert_eq!(effective(Some(&d), Some(&saved)).detection_interval_minutes, 5);
        assert_eq!(effective(Some(&d), Some(&saved)).retry_limit, 0);
        assert_eq!(effective(Some(&d), Some(&without_runtime)).detection_interval_minutes, 30);
        assert_eq!(effective(Some(&d), None).detection_interval_minutes, 30);
        assert_eq!(effective(None, Some(&without_runtime)), fallback());
        assert_eq!(effective(None, None), fallback());
    }
}
