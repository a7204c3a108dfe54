//! The runtime settings form: its view and its parsing, both driven by the one table of
//! runtime settings ([`RUNTIME_SETTINGS`]); range checks are the validator's.

use std::collections::HashMap;

use proto::pb;

use super::{Posted, sentence};
use crate::{
    runtime_config::{RUNTIME_SETTINGS, SettingKind, Zero},
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
    pub unit: &'static str,
    pub help: String,
    pub value: String,
    pub min: i32,
    pub max: i32,
    pub error: String,
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
                    Zero::Fallback => format!("0 uses the admin's default ({}).", n.fallback),
                    Zero::Means(what) => format!("0 means {what}."),
                };
                view.fields.push(RuntimeFieldView {
                    id: format!("f-{}", s.name.replace('_', "-")),
                    label: s.label.to_string(),
                    unit: n.unit,
                    help: format!("{} {zero}", s.help),
                    value: match posted {
                        Some(p) => p.first(&name).unwrap_or_default().to_string(),
                        None => (n.get)(current).to_string(),
                    },
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

/// The posted runtime settings: a switch is on when its box was ticked; a blank number
/// is 0. Range checks are the validator's.
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
                match text.parse::<i32>() {
                    Ok(v) => (n.set)(&mut r, v),
                    Err(_) => errors.push(FieldError::new(name, "must be a whole number")),
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
        assert!(retries.help.ends_with("0 means no retries."), "{}", retries.help);
        let interval = view.fields.iter().find(|f| f.name == "runtime.detection_interval_minutes").unwrap();
        assert_eq!(interval.id, "f-detection-interval-minutes");
        assert!(interval.help.ends_with("0 uses the admin's default (10)."), "{}", interval.help);
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
        pairs.extend(view.fields.iter().map(|f| (f.name.clone(), f.value.clone())));
        assert_eq!(parse_runtime(Posted(&pairs)), (current, Vec::new()));

        let shown_again = runtime_view(&pb::AdminRuntimeConfig::default(), Some(Posted(&pairs)), &HashMap::new());
        assert!(shown_again.switches[0].checked);
        assert_eq!(shown_again.fields[0].value, "15");
    }
}
