//! The admin runtime settings of a job type: the one table that describes them
//! ([`RUNTIME_SETTINGS`]), the fallback used when neither the operator nor the worker's
//! descriptor says otherwise, and the effective settings.
//!
//! Where a value comes from, first match wins: the saved config's `admin_runtime`, the
//! descriptor's `admin_runtime_defaults`, [`fallback()`]. Whatever the source, the result
//! goes through [`fill()`], so a zero in a field where zero means nothing useful (an
//! interval of 0 minutes, a timeout of 0 seconds) never reaches the scheduler.
//!
//! Each row of [`RUNTIME_SETTINGS`] holds a setting's name, label, unit, bounds, fallback,
//! what zero means, help and why the fallback is what it is. The validator takes the
//! bounds from it, the runtime form its labels, units, bounds and help, [`fallback()`]
//! and [`fill()`] its fallbacks and zero rules, and the README's "Runtime settings" table
//! is rendered from it ([`docs_table`]; a test keeps the README in step).

use proto::pb;

pub const DAY_SECONDS: i32 = 86_400;
pub const WEEK_SECONDS: i32 = 7 * DAY_SECONDS;

/// One admin runtime setting: a field of `AdminRuntimeConfig` (and of
/// `AdminRuntimeDefaults`, which has the same fields).
#[derive(Debug)]
pub struct RuntimeSetting {
    /// The field name in `AdminRuntimeConfig` and in proto JSON; the form's input is
    /// `runtime.<name>`, the validator's errors are reported as `runtime.<name>`.
    pub name: &'static str,
    /// The form's label.
    pub label: &'static str,
    /// What the setting does, as the form's hint (one or more sentences).
    pub help: &'static str,
    /// Why the fallback is what it is (the docs).
    pub why: &'static str,
    pub kind: SettingKind,
}

#[derive(Debug)]
pub enum SettingKind {
    /// On or off (`enabled`).
    Switch(SwitchSetting),
    /// A whole number.
    Number(NumberSetting),
}

#[derive(Debug)]
pub struct SwitchSetting {
    pub fallback: bool,
    pub get: fn(&pb::AdminRuntimeConfig) -> bool,
    pub set: fn(&mut pb::AdminRuntimeConfig, bool),
}

#[derive(Debug)]
pub struct NumberSetting {
    /// What the number counts: things ("jobs") or a duration in whole seconds or minutes.
    pub unit: Unit,
    /// The accepted range (the validator's). Zero is allowed everywhere (it means "use the
    /// fallback" or has a meaning of its own, see [`Zero`]); the upper bounds catch typos
    /// (a timeout in milliseconds, a year-long interval) rather than encode policy.
    pub min: i32,
    pub max: i32,
    pub fallback: i32,
    pub zero: Zero,
    pub get: fn(&pb::AdminRuntimeConfig) -> i32,
    pub set: fn(&mut pb::AdminRuntimeConfig, i32),
}

/// What a number setting counts. A duration is stored as a whole number of its unit
/// (the field names say which: `_seconds`, `_minutes`); the runtime form edits it with the
/// duration widget of the config forms (an amount and a unit from the stored one up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things, named in words: "jobs", "retries".
    Count(&'static str),
    /// A duration in whole seconds.
    Seconds,
    /// A duration in whole minutes.
    Minutes,
}

impl Unit {
    /// The unit in words, plural: "jobs", "seconds", "minutes".
    pub fn words(self) -> &'static str {
        match self {
            Unit::Count(words) => words,
            Unit::Seconds => "seconds",
            Unit::Minutes => "minutes",
        }
    }

    /// A duration's stored unit as [`crate::config_value::DURATION_UNITS`] names it (`s`,
    /// `min`); `None` for a count.
    pub fn duration_unit(self) -> Option<&'static str> {
        match self {
            Unit::Count(_) => None,
            Unit::Seconds => Some("s"),
            Unit::Minutes => Some("min"),
        }
    }

    /// `v` of this unit as a duration in nanoseconds; `None` for a count.
    pub fn nanos(self, v: i64) -> Option<i128> {
        self.duration_unit().map(|u| i128::from(v) * crate::config_value::unit_named(u).1)
    }

    /// `v` for messages: a count as the bare number ("100"), a duration with its unit and,
    /// when a larger unit shows it exactly, in that unit too: "604800 seconds (7 days)".
    pub fn amount_text(self, v: i64) -> String {
        use crate::config_value::{duration_display_in, duration_units_from, in_words};
        let Some((unit, nanos)) = self.duration_unit().zip(self.nanos(v)) else {
            return v.to_string();
        };
        let stored = in_words(&v.to_string(), unit);
        let (amount, larger) = duration_display_in(nanos, duration_units_from(unit));
        if larger == unit { stored } else { format!("{stored} ({})", in_words(&amount, larger)) }
    }
}

/// What zero (the value of a field nobody set) means for a number setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// Use the fallback: [`fill()`] replaces zero and negative values with it.
    Fallback,
    /// Zero has this meaning ("no retries"): [`fill()`] keeps it and turns only negative
    /// values, which have no meaning, into zero.
    Means(&'static str),
}

impl RuntimeSetting {
    /// The number setting, or `None` for the switch.
    pub fn number(&self) -> Option<&NumberSetting> {
        match &self.kind {
            SettingKind::Number(n) => Some(n),
            SettingKind::Switch(_) => None,
        }
    }
}

/// Every admin runtime setting, one row per field of `AdminRuntimeConfig`, in the
/// message's field order.
pub const RUNTIME_SETTINGS: &[RuntimeSetting] = &[
    RuntimeSetting {
        name: "enabled",
        label: "Enabled",
        help: "When off, no scheduled detection runs; Run now still works.",
        why: "a job type a worker offers is meant to run; the operator can switch it off",
        kind: SettingKind::Switch(SwitchSetting { fallback: true, get: |r| r.enabled, set: |r, v| r.enabled = v }),
    },
    RuntimeSetting {
        name: "detection_interval_minutes",
        label: "Detection interval",
        help: "How often the scheduler asks a detector for work while the job type is enabled.",
        why: "frequent enough to notice work, cheap enough for a detector that scans a cluster",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Minutes,
            min: 0,
            max: 525_600, // one year
            fallback: 10,
            zero: Zero::Fallback,
            get: |r| r.detection_interval_minutes,
            set: |r, v| r.detection_interval_minutes = v,
        }),
    },
    RuntimeSetting {
        name: "detection_timeout_seconds",
        label: "Detection timeout",
        help: "How long one detection may run before it is cancelled.",
        why: "a scan that takes longer is stuck more often than it is slow",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Seconds,
            min: 0,
            max: WEEK_SECONDS,
            fallback: 60,
            zero: Zero::Fallback,
            get: |r| r.detection_timeout_seconds,
            set: |r, v| r.detection_timeout_seconds = v,
        }),
    },
    RuntimeSetting {
        name: "max_jobs_per_detection",
        label: "Max jobs per detection",
        help: "Proposals beyond this many are left for the next detection.",
        why: "one detection cannot flood the queue; the next round picks up the rest",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Count("jobs"),
            min: 0,
            max: 1_000_000,
            fallback: 1000,
            zero: Zero::Fallback,
            get: |r| r.max_jobs_per_detection,
            set: |r, v| r.max_jobs_per_detection = v,
        }),
    },
    RuntimeSetting {
        name: "global_execution_concurrency",
        label: "Concurrency, all workers",
        help: "How many jobs of this type may run at once across all workers.",
        why: "per job type, across all workers: bounds the load one job type puts on the cluster",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Count("jobs"),
            min: 0,
            max: 10_000,
            fallback: 64,
            zero: Zero::Fallback,
            get: |r| r.global_execution_concurrency,
            set: |r, v| r.global_execution_concurrency = v,
        }),
    },
    RuntimeSetting {
        name: "per_worker_execution_concurrency",
        label: "Concurrency per worker",
        help: "How many jobs of this type one worker may run at once.",
        why: "no per-worker cap: a worker is limited only by the slots it advertises",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Count("jobs"),
            min: 0,
            max: 10_000,
            fallback: 0,
            zero: Zero::Means("no cap beyond the worker's own slots"),
            get: |r| r.per_worker_execution_concurrency,
            set: |r, v| r.per_worker_execution_concurrency = v,
        }),
    },
    RuntimeSetting {
        name: "retry_limit",
        label: "Retries",
        help: "How often a failed job is tried again before it is dead-lettered.",
        why: "transient failures get a few chances, a broken job is dead-lettered soon",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Count("retries"),
            min: 0,
            max: 100,
            fallback: 3,
            zero: Zero::Means("no retries"),
            get: |r| r.retry_limit,
            set: |r, v| r.retry_limit = v,
        }),
    },
    RuntimeSetting {
        name: "retry_backoff_seconds",
        label: "Retry backoff",
        help: "How long a failed job waits before its next attempt.",
        why: "long enough for a restarted worker or a flapping peer to settle",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Seconds,
            min: 0,
            max: DAY_SECONDS,
            fallback: 10,
            zero: Zero::Fallback,
            get: |r| r.retry_backoff_seconds,
            set: |r, v| r.retry_backoff_seconds = v,
        }),
    },
    RuntimeSetting {
        name: "job_type_max_runtime_seconds",
        label: "Max total runtime",
        help: "A cap on each attempt's execution timeout: an attempt is cancelled after the smaller of the two.",
        why: "no cap beyond the execution timeout",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Seconds,
            min: 0,
            max: WEEK_SECONDS,
            fallback: 0,
            zero: Zero::Means("no limit"),
            get: |r| r.job_type_max_runtime_seconds,
            set: |r, v| r.job_type_max_runtime_seconds = v,
        }),
    },
    RuntimeSetting {
        name: "execution_timeout_seconds",
        label: "Execution timeout",
        help: "How long one attempt may run before it is cancelled.",
        why: "per attempt: generous for bulk work, but a hung attempt is eventually cancelled",
        kind: SettingKind::Number(NumberSetting {
            unit: Unit::Seconds,
            min: 0,
            max: WEEK_SECONDS,
            fallback: 3600,
            zero: Zero::Fallback,
            get: |r| r.execution_timeout_seconds,
            set: |r, v| r.execution_timeout_seconds = v,
        }),
    },
];

/// The number settings of [`RUNTIME_SETTINGS`], in order.
pub fn number_settings() -> impl Iterator<Item = (&'static RuntimeSetting, &'static NumberSetting)> {
    RUNTIME_SETTINGS.iter().filter_map(|s| s.number().map(|n| (s, n)))
}

/// The admin's fallback runtime settings (the `fallback` column of [`RUNTIME_SETTINGS`]).
pub fn fallback() -> pb::AdminRuntimeConfig {
    let mut r = pb::AdminRuntimeConfig::default();
    for s in RUNTIME_SETTINGS {
        match &s.kind {
            SettingKind::Switch(w) => (w.set)(&mut r, w.fallback),
            SettingKind::Number(n) => (n.set)(&mut r, n.fallback),
        }
    }
    r
}

/// The runtime defaults a descriptor declares, through [`fill()`]. A descriptor that
/// declares none gets [`fallback()`] switched off, as SeaweedFS's admin does: a job type
/// from a worker that says nothing about how it should run (one that deletes data, say)
/// waits for an operator to enable it instead of detecting and executing unattended.
pub fn defaults_from_descriptor(d: &pb::JobTypeDescriptor) -> pb::AdminRuntimeConfig {
    match &d.admin_runtime_defaults {
        Some(defaults) => fill(from_defaults(defaults)),
        None => pb::AdminRuntimeConfig { enabled: false, ..fill(fallback()) },
    }
}

/// Whether a job type is off only because its worker declared no runtime defaults and
/// no operator has saved settings yet (the pages say it waits for an operator).
pub fn awaits_operator(descriptor: &pb::JobTypeDescriptor, config: Option<&pb::PersistedJobTypeConfig>) -> bool {
    descriptor.admin_runtime_defaults.is_none()
        && config.is_none_or(|c| c.updated_by == crate::config_store::BOOTSTRAP_USER)
        && !effective(Some(descriptor), config).enabled
}

/// Replaces values that would make no sense, by each setting's [`Zero`] rule.
///
/// Zero or negative in a setting whose zero means "use the fallback" (the interval, the
/// timeouts, max jobs per detection, global concurrency, the retry backoff) becomes the
/// fallback value: a zero there is what a descriptor or an old config that never set the
/// field looks like on the wire. Settings where zero has a meaning of its own
/// (`retry_limit`, `per_worker_execution_concurrency`, `job_type_max_runtime_seconds`:
/// no retries, no per-worker cap, no limit) keep zero; only a negative value there, which
/// has no meaning, becomes 0. `enabled` is kept as given.
pub fn fill(r: pb::AdminRuntimeConfig) -> pb::AdminRuntimeConfig {
    let mut filled = r;
    for (_, n) in number_settings() {
        let v = (n.get)(&r);
        let v = match n.zero {
            Zero::Fallback if v > 0 => v,
            Zero::Fallback => n.fallback,
            Zero::Means(_) => v.max(0),
        };
        (n.set)(&mut filled, v);
    }
    filled
}

/// The runtime settings the scheduler and dispatcher use: the saved config's, else the
/// descriptor's defaults, else [`fallback()`]; always through [`fill()`]. A zero in a
/// saved setting whose zero means "the fallback" takes the descriptor's default first (the
/// worker knows its job type better than the admin's generic fallback).
pub fn effective(
    descriptor: Option<&pb::JobTypeDescriptor>,
    config: Option<&pb::PersistedJobTypeConfig>,
) -> pb::AdminRuntimeConfig {
    if let Some(saved) = config.and_then(|c| c.admin_runtime) {
        let declared = descriptor.and_then(|d| d.admin_runtime_defaults.as_ref()).map(from_defaults);
        return fill(match declared {
            Some(declared) => zeros_from(saved, &declared),
            None => saved,
        });
    }
    match descriptor {
        Some(d) => defaults_from_descriptor(d),
        None => fill(fallback()),
    }
}

/// `r` with each zero (or negative) "use the fallback" setting taken from `defaults`.
fn zeros_from(r: pb::AdminRuntimeConfig, defaults: &pb::AdminRuntimeConfig) -> pb::AdminRuntimeConfig {
    let mut out = r;
    for (_, n) in number_settings() {
        if matches!(n.zero, Zero::Fallback) && (n.get)(&r) <= 0 {
            (n.set)(&mut out, (n.get)(defaults));
        }
    }
    out
}

/// The descriptor's defaults as a config (the two messages have the same ten fields; the
/// compiler checks that none is left out here).
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

/// The first line of the README's generated table (the docs test finds it there).
pub const DOCS_TABLE_START: &str = "<!-- runtime settings: generated from admin/src/runtime_config.rs, do not edit -->";
/// The line after the README's generated table.
pub const DOCS_TABLE_END: &str = "<!-- end of runtime settings -->";

/// The README's "Runtime settings" table, between its two marker lines.
pub fn docs_table() -> String {
    let mut out = String::new();
    out.push_str(DOCS_TABLE_START);
    out.push('\n');
    out.push_str("| setting | form label | unit | range | fallback | 0 means | what it does | why this fallback |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for s in RUNTIME_SETTINGS {
        let (unit, range, fallback, zero) = match &s.kind {
            SettingKind::Switch(w) => {
                ("", "on or off".to_string(), if w.fallback { "on" } else { "off" }.to_string(), "")
            }
            SettingKind::Number(n) => (
                n.unit.words(),
                format!("{} to {}", n.min, n.max),
                n.fallback.to_string(),
                match n.zero {
                    Zero::Fallback => "the fallback",
                    Zero::Means(what) => what,
                },
            ),
        };
        out.push_str(&format!(
            "| `{}` | {} | {unit} | {range} | {fallback} | {zero} | {} | {} |\n",
            s.name, s.label, s.help, s.why
        ));
    }
    out.push_str(DOCS_TABLE_END);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor_with(defaults: Option<pb::AdminRuntimeDefaults>) -> pb::JobTypeDescriptor {
        pb::JobTypeDescriptor { job_type: "vacuum".into(), admin_runtime_defaults: defaults, ..Default::default() }
    }

    #[test]
    fn a_job_type_whose_worker_declares_no_defaults_waits_for_an_operator() {
        let foreign = descriptor_with(None);
        let r = effective(Some(&foreign), None);
        assert!(!r.enabled, "created disabled, as SeaweedFS does");
        assert_eq!(r.detection_interval_minutes, fallback().detection_interval_minutes, "otherwise the fallbacks");
        let bootstrapped = pb::PersistedJobTypeConfig {
            admin_runtime: Some(defaults_from_descriptor(&foreign)),
            updated_by: crate::config_store::BOOTSTRAP_USER.into(),
            ..Default::default()
        };
        assert!(awaits_operator(&foreign, Some(&bootstrapped)));
        let mut enabled = bootstrapped.clone();
        enabled.updated_by = "ops".into();
        enabled.admin_runtime.as_mut().unwrap().enabled = true;
        assert!(!awaits_operator(&foreign, Some(&enabled)), "an operator enabled it");
        let own = descriptor_with(Some(pb::AdminRuntimeDefaults { enabled: false, ..Default::default() }));
        assert!(!awaits_operator(&own, None), "a worker that says 'off' is merely disabled");
    }

    #[test]
    fn zeros_in_a_saved_config_take_the_descriptors_defaults_before_the_fallbacks() {
        let d = descriptor_with(Some(pb::AdminRuntimeDefaults {
            detection_interval_minutes: 45,
            execution_timeout_seconds: 120,
            retry_limit: 5,
            ..Default::default()
        }));
        let saved = pb::PersistedJobTypeConfig {
            admin_runtime: Some(pb::AdminRuntimeConfig { enabled: true, ..Default::default() }),
            ..Default::default()
        };
        let r = effective(Some(&d), Some(&saved));
        assert_eq!(r.detection_interval_minutes, 45, "the descriptor's default");
        assert_eq!(r.execution_timeout_seconds, 120);
        assert_eq!(r.detection_timeout_seconds, fallback().detection_timeout_seconds, "then the admin's fallback");
        assert_eq!(r.retry_limit, 0, "a zero that means something (no retries) is kept");
    }

    #[test]
    fn the_table_has_one_row_per_field_of_the_message_in_order() {
        let message = proto::descriptor_pool()
            .get_message_by_name("plugin.AdminRuntimeConfig")
            .expect("AdminRuntimeConfig is in the descriptor pool");
        let fields: Vec<String> = message.fields().map(|f| f.name().to_string()).collect();
        let rows: Vec<&str> = RUNTIME_SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(fields, rows);
    }

    #[test]
    fn each_row_reads_and_writes_its_own_field() {
        // Every number setting gets a distinct value; each getter must see its own, and
        // the JSON of the message must hold it under the row's name.
        let mut r = pb::AdminRuntimeConfig::default();
        for (i, (_, n)) in number_settings().enumerate() {
            (n.set)(&mut r, i as i32 + 1);
        }
        let json: serde_json::Value = serde_json::from_str(&proto::json::to_string_pretty(&r).unwrap()).unwrap();
        for (i, (s, n)) in number_settings().enumerate() {
            assert_eq!((n.get)(&r), i as i32 + 1, "{}", s.name);
            assert_eq!(json[s.name], i as i64 + 1, "{}", s.name);
        }
        for s in RUNTIME_SETTINGS {
            if let SettingKind::Switch(w) = &s.kind {
                let mut r = pb::AdminRuntimeConfig::default();
                (w.set)(&mut r, true);
                assert!((w.get)(&r));
                let json: serde_json::Value =
                    serde_json::from_str(&proto::json::to_string_pretty(&r).unwrap()).unwrap();
                assert_eq!(json[s.name], true, "{}", s.name);
            }
        }
    }

    #[test]
    fn every_fallback_is_within_its_bounds_and_every_row_is_described() {
        for s in RUNTIME_SETTINGS {
            assert!(!s.label.is_empty() && !s.help.is_empty() && !s.why.is_empty(), "{}", s.name);
            if let Some(n) = s.number() {
                assert!(n.min <= n.fallback && n.fallback <= n.max, "{}", s.name);
                assert!(n.min <= 0, "{}: zero is always accepted", s.name);
                assert!(!n.unit.words().is_empty(), "{}", s.name);
                let duration = s.name.ends_with("_seconds") || s.name.ends_with("_minutes");
                assert_eq!(n.unit.duration_unit().is_some(), duration, "{}: the name says the unit", s.name);
            }
        }
    }

    #[test]
    fn the_readme_holds_the_rendered_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md is readable");
        let start = readme.find(DOCS_TABLE_START).expect("README.md has the runtime settings table");
        let end = readme[start..].find(DOCS_TABLE_END).map(|e| start + e + DOCS_TABLE_END.len() + 1);
        let shown = end.map(|end| &readme[start..end.min(readme.len())]).unwrap_or(&readme[start..]);
        assert_eq!(
            shown,
            docs_table(),
            "README.md's runtime settings table is stale; replace it with the expected text"
        );
    }

    #[test]
    fn the_docs_table_shows_each_row() {
        let table = docs_table();
        assert!(table.contains("| `enabled` | Enabled |  | on or off | on |  | When off,"), "{table}");
        assert!(table.contains("| `retry_limit` | Retries | retries | 0 to 100 | 3 | no retries |"), "{table}");
        assert!(table.contains(
            "| `execution_timeout_seconds` | Execution timeout | seconds | 0 to 604800 | 3600 | the fallback |"
        ));
        assert_eq!(table.lines().count(), RUNTIME_SETTINGS.len() + 4);
    }

    #[test]
    fn amounts_read_with_their_unit_and_a_larger_one_that_shows_them_exactly() {
        assert_eq!(Unit::Count("retries").amount_text(100), "100");
        assert_eq!(Unit::Seconds.amount_text(WEEK_SECONDS.into()), "604800 seconds (7 days)");
        assert_eq!(Unit::Seconds.amount_text(90), "90 seconds");
        assert_eq!(Unit::Seconds.amount_text(1), "1 second");
        assert_eq!(Unit::Minutes.amount_text(0), "0 minutes");
        assert_eq!(Unit::Minutes.amount_text(525_600), "525600 minutes (365 days)");
        assert_eq!(Unit::Minutes.amount_text(60), "60 minutes (1 hour)");
        assert_eq!(Unit::Minutes.nanos(2), Some(120_000_000_000));
        assert_eq!(Unit::Count("jobs").nanos(2), None);
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
    fn a_descriptor_without_runtime_defaults_gets_the_fallback_switched_off() {
        let expected = pb::AdminRuntimeConfig { enabled: false, ..fallback() };
        assert_eq!(defaults_from_descriptor(&descriptor_with(None)), expected);
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
