//! The runtime settings form: its view and its parsing, both driven by the one table of
//! runtime settings ([`RUNTIME_SETTINGS`]); range checks are the validator's.
//!
//! A duration setting (stored in whole seconds or minutes) is edited with the config
//! forms' duration widget: an amount and a unit, offered from the stored unit up (s, min,
//! h, d for seconds; min, h, d for minutes), read through the same
//! [`parse_duration_input`]. It is shown in the largest unit that shows it exactly. An
//! amount that is not a whole number of the stored unit (30 s for a setting in minutes,
//! 0.5 s) is refused with "must be a whole number of minutes" rather than rounded: a
//! rounded timeout would be a value the operator never typed. A post without the unit
//! (`runtime.retry_backoff_seconds=20`, as scripts send it) is read in the stored unit.

use std::collections::HashMap;

use proto::pb;

use super::{Posted, UnitChoice, sentence, unit_choices};
use crate::{
    config_value::{
        duration_display_in, duration_nanos, duration_units_from, in_words, parse_duration_input, unit_named,
    },
    runtime_config::{RUNTIME_SETTINGS, SettingKind, Unit, Zero},
    validator::FieldError,
};

pub struct RuntimeView {
    /// The on/off settings (`enabled`), shown as checkboxes first.
    pub switches: Vec<RuntimeSwitchView>,
    /// The number settings.
    pub fields: Vec<RuntimeFieldView>,
}

pub struct RuntimeSwitchView {
    pub name: String,
    pub id: String,
    pub label: &'static str,
    pub help: &'static str,
    pub checked: bool,
}

pub struct RuntimeFieldView {
    pub name: String,
    pub id: String,
    pub label: String,
    /// What a count counts, in words ("jobs"); a duration's unit is in `units`.
    pub unit: &'static str,
    /// A duration: the units its widget offers, the shown one selected (empty for a
    /// count).
    pub units: Vec<UnitChoice>,
    pub help: String,
    /// The amount shown (for a duration, of the unit selected in `units`).
    pub value: String,
    pub min: i32,
    pub max: i32,
    pub error: String,
}

impl RuntimeFieldView {
    pub fn is_duration(&self) -> bool {
        !self.units.is_empty()
    }

    /// The unit a duration is shown in.
    #[cfg(test)]
    fn shown_unit(&self) -> &'static str {
        self.units.iter().find(|u| u.selected).map(|u| u.value).unwrap_or_default()
    }
}

/// The units a duration setting's widget offers: from its stored unit up.
fn units_of(unit: Unit) -> &'static [(&'static str, &'static str)] {
    unit.duration_unit().map(duration_units_from).unwrap_or(&[])
}

/// A posted unit, if the widget offers it.
fn offered(units: &'static [(&'static str, &'static str)], posted: Option<&str>) -> Option<&'static str> {
    units.iter().map(|(u, _)| *u).find(|u| Some(*u) == posted)
}

/// A value of `unit` in the largest unit that shows it exactly, in words: "10 minutes",
/// "1 day"; a count with its words: "1000 jobs".
fn amount_in_words(unit: Unit, v: i64) -> String {
    match unit.nanos(v) {
        Some(nanos) => {
            let (amount, shown) = duration_display_in(nanos, units_of(unit));
            in_words(&amount, shown)
        }
        None => v.to_string(),
    }
}

/// The runtime form showing `current`, or what was posted.
pub fn runtime_view(
    current: &pb::AdminRuntimeConfig,
    posted: Option<Posted<'_>>,
    errors: &HashMap<String, Vec<String>>,
) -> RuntimeView {
    let mut view = RuntimeView { switches: Vec::new(), fields: Vec::new() };
    for s in RUNTIME_SETTINGS {
        let name = format!("runtime.{}", s.name);
        match &s.kind {
            SettingKind::Switch(w) => view.switches.push(RuntimeSwitchView {
                id: format!("f-runtime-{}", s.name.replace('_', "-")),
                label: s.label,
                help: s.help,
                checked: match posted {
                    Some(p) => p.all(&name).any(|v| v == "true"),
                    None => (w.get)(current),
                },
                name,
            }),
            SettingKind::Number(n) => {
                let zero = match n.zero {
                    Zero::Fallback => {
                        format!("0 uses the admin's default ({}).", amount_in_words(n.unit, n.fallback.into()))
                    }
                    Zero::Means(what) => format!("0 means {what}."),
                };
                let units = units_of(n.unit);
                let stored = n.unit.duration_unit().unwrap_or("");
                let range = if units.is_empty() {
                    String::new()
                } else {
                    format!(" At most {}.", amount_in_words(n.unit, n.max.into()))
                };
                let (value, shown_unit) = match posted {
                    Some(p) => (
                        p.first(&name).unwrap_or_default().to_string(),
                        offered(units, p.first(&format!("unit:{name}"))).unwrap_or(stored),
                    ),
                    None => {
                        let v = (n.get)(current);
                        match n.unit.nanos(v.into()) {
                            Some(nanos) => duration_display_in(nanos, units),
                            None => (v.to_string(), stored),
                        }
                    }
                };
                view.fields.push(RuntimeFieldView {
                    id: format!("f-{}", s.name.replace('_', "-")),
                    label: s.label.to_string(),
                    unit: if units.is_empty() { n.unit.words() } else { "" },
                    units: unit_choices(units, shown_unit),
                    help: format!("{} {zero}{range}", s.help),
                    value,
                    min: n.min,
                    max: n.max,
                    error: errors.get(&name).map(|e| sentence(&e.join("; "))).unwrap_or_default(),
                    name,
                });
            }
        }
    }
    view
}

/// A duration typed as an amount and a unit, as a whole number of `stored` (a duration
/// unit of the runtime table): `Ok(None)` when blank; an error when it is not a number or
/// not a whole number of the stored unit. Beyond `i64`, it saturates (the bounds say why).
pub fn duration_in(amount: &str, unit: &str, stored: Unit) -> Result<Option<i64>, String> {
    let Some(stored_unit) = stored.duration_unit() else {
        return Err("is not a duration".into());
    };
    let Some(d) = parse_duration_input(amount, unit)? else {
        return Ok(None);
    };
    let (nanos, per) = (duration_nanos(&d), unit_named(stored_unit).1);
    if nanos % per != 0 {
        return Err(format!("must be a whole number of {}", stored.words()));
    }
    Ok(Some(i64::try_from(nanos / per).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })))
}

/// The posted runtime settings: a switch is on when its box was ticked; a blank number
/// is 0; a duration is its amount in its posted unit (the stored unit when none is
/// posted). Range checks are the validator's.
pub fn parse_runtime(posted: Posted<'_>) -> (pb::AdminRuntimeConfig, Vec<FieldError>) {
    let mut r = pb::AdminRuntimeConfig::default();
    let mut errors = Vec::new();
    for s in RUNTIME_SETTINGS {
        let name = format!("runtime.{}", s.name);
        match &s.kind {
            SettingKind::Switch(w) => (w.set)(&mut r, posted.all(&name).any(|v| v == "true")),
            SettingKind::Number(n) => {
                let text = posted.first(&name).unwrap_or_default().trim();
                if text.is_empty() {
                    continue;
                }
                let parsed = match n.unit.duration_unit() {
                    None => text.parse::<i32>().map_err(|_| "must be a whole number".to_string()),
                    Some(stored) => {
                        let unit = posted.first(&format!("unit:{name}")).unwrap_or(stored);
                        // Out of i32's range: saturated, so the validator names the bound.
                        duration_in(text, unit, n.unit)
                            .map(|v| v.unwrap_or(0).clamp(i32::MIN.into(), i32::MAX.into()) as i32)
                    }
                };
                match parsed {
                    Ok(v) => (n.set)(&mut r, v),
                    Err(message) => errors.push(FieldError::new(name, message)),
                }
            }
        }
    }
    (r, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_config::fallback;

    #[test]
    fn the_form_shows_every_setting_of_the_table_with_its_bounds_and_zero_rule() {
        let view = runtime_view(&fallback(), None, &HashMap::new());
        assert_eq!(view.switches.len() + view.fields.len(), RUNTIME_SETTINGS.len());
        let enabled = &view.switches[0];
        assert_eq!(
            (enabled.name.as_str(), enabled.id.as_str(), enabled.checked),
            ("runtime.enabled", "f-runtime-enabled", true)
        );
        let retries = view.fields.iter().find(|f| f.name == "runtime.retry_limit").unwrap();
        assert_eq!((retries.value.as_str(), retries.min, retries.max, retries.unit), ("3", 0, 100, "retries"));
        assert!(!retries.is_duration());
        assert!(retries.help.ends_with("0 means no retries."), "{}", retries.help);
        let interval = view.fields.iter().find(|f| f.name == "runtime.detection_interval_minutes").unwrap();
        assert_eq!(interval.id, "f-detection-interval-minutes");
        assert!(interval.is_duration());
        assert_eq!((interval.value.as_str(), interval.shown_unit()), ("10", "min"));
        assert_eq!(interval.units.iter().map(|u| u.value).collect::<Vec<_>>(), ["min", "h", "d"]);
        assert!(interval.units[0].selected && !interval.units[1].selected);
        assert!(
            interval.help.ends_with("0 uses the admin's default (10 minutes). At most 365 days."),
            "{}",
            interval.help
        );
        let timeout = view.fields.iter().find(|f| f.name == "runtime.execution_timeout_seconds").unwrap();
        assert_eq!((timeout.value.as_str(), timeout.shown_unit()), ("1", "h"), "3600 s reads as 1 hour");
        assert_eq!(timeout.units.len(), 4, "s, min, h, d");
    }

    #[test]
    fn a_runtime_duration_is_an_amount_and_a_unit_stored_in_whole_seconds_or_minutes() {
        let post = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let p = post(&[
            ("runtime.detection_interval_minutes", "2"),
            ("unit:runtime.detection_interval_minutes", "h"),
            ("runtime.execution_timeout_seconds", "1.5"),
            ("unit:runtime.execution_timeout_seconds", "min"),
            ("runtime.retry_backoff_seconds", "20"),
            ("runtime.detection_timeout_seconds", "1"),
            ("unit:runtime.detection_timeout_seconds", "d"),
        ]);
        let (r, errors) = parse_runtime(Posted(&p));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.detection_interval_minutes, 120);
        assert_eq!(r.execution_timeout_seconds, 90);
        assert_eq!(r.retry_backoff_seconds, 20, "no unit: the stored one");
        assert_eq!(r.detection_timeout_seconds, 86_400);

        let p = post(&[
            ("runtime.detection_interval_minutes", "30"),
            ("unit:runtime.detection_interval_minutes", "s"),
            ("runtime.execution_timeout_seconds", "soon"),
            ("unit:runtime.execution_timeout_seconds", "h"),
            ("runtime.retry_backoff_seconds", "0.5"),
            ("runtime.job_type_max_runtime_seconds", "1000000"),
            ("unit:runtime.job_type_max_runtime_seconds", "d"),
        ]);
        let (r, errors) = parse_runtime(Posted(&p));
        let said: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect();
        assert_eq!(
            said,
            [
                ("runtime.detection_interval_minutes", "must be a whole number of minutes"),
                ("runtime.retry_backoff_seconds", "must be a whole number of seconds"),
                ("runtime.execution_timeout_seconds", "must be a number of hours"),
            ]
        );
        assert_eq!(r.job_type_max_runtime_seconds, i32::MAX, "too long saturates, for the validator's bound");

        // Shown again, the posted amount and unit come back as typed.
        let view = runtime_view(&fallback(), Some(Posted(&p)), &HashMap::new());
        let interval = view.fields.iter().find(|f| f.name == "runtime.detection_interval_minutes").unwrap();
        assert_eq!((interval.value.as_str(), interval.shown_unit()), ("30", "min"), "s is not offered here");
        let timeout = view.fields.iter().find(|f| f.name == "runtime.execution_timeout_seconds").unwrap();
        assert_eq!((timeout.value.as_str(), timeout.shown_unit()), ("soon", "h"));
    }

    #[test]
    fn what_the_form_shows_parses_back_to_the_same_settings() {
        let current = pb::AdminRuntimeConfig { retry_limit: 0, detection_interval_minutes: 15, ..fallback() };
        let view = runtime_view(&current, None, &HashMap::new());
        let mut pairs = Vec::new();
        for s in &view.switches {
            pairs.push((s.name.clone(), "false".to_string()));
            if s.checked {
                pairs.push((s.name.clone(), "true".to_string()));
            }
        }
        for f in &view.fields {
            pairs.push((f.name.clone(), f.value.clone()));
            if f.is_duration() {
                pairs.push((format!("unit:{}", f.name), f.shown_unit().to_string()));
            }
        }
        assert_eq!(parse_runtime(Posted(&pairs)), (current, Vec::new()));

        let shown_again = runtime_view(&pb::AdminRuntimeConfig::default(), Some(Posted(&pairs)), &HashMap::new());
        assert!(shown_again.switches[0].checked);
        assert_eq!((shown_again.fields[0].value.as_str(), shown_again.fields[0].shown_unit()), ("15", "min"));
    }
}
