//! The one validator of config values against a job type's descriptor, shared by the
//! JSON API, the HTML pages and the config store, so that a value one of them accepts is
//! never rejected by another.
//!
//! What is checked, per field of a [`pb::ConfigForm`]: that the field exists, the value's
//! type, `required`, `min_value`/`max_value`, `options`, `read_only`, `visible_when_*`
//! and the validation rules. Error messages never contain the submitted value, because
//! the value may be a secret (a `sensitive` field); they name the field and say what is
//! expected, as a lowercase sentence without a trailing period.
//!
//! Semantics worth knowing:
//! - A value whose oneof is unset counts as absent.
//! - A hidden field (its `visible_when_field` does not currently hold
//!   `visible_when_equals`) is not validated and not required. The controlling field's
//!   value is the submitted one, else the form's default (for the worker form, the
//!   descriptor's `worker_default_values` first). A condition without a value to compare
//!   against is treated as always true. Conditions are not chained: whether the
//!   controlling field is itself visible does not matter. The rule, and how values are
//!   compared (`1` matches `1.0`, a string `"5"` matches `5`), is
//!   [`config_value::is_visible`](crate::config_value::is_visible), which the forms use too.
//! - A read-only field is only compared with its saved value (else its default): it must
//!   be the same value ([`same_value`](crate::config_value::same_value): identical, or a
//!   number of the same value); no other check applies to it, since the operator cannot
//!   change it anyway.
//! - Options restrict any field that has them (ENUM, STRING, a number shown as a select,
//!   every item of a LIST), matched by value key. An ENUM whose descriptor lists no
//!   options accepts any string: there is nothing to check against. A DURATION is not
//!   restricted by options.
//! - As in HTML forms, an empty string in an optional field passes the options, regex and
//!   length checks: "not filled in" is not "filled in wrongly".
//! - A REGEX rule passes when its expression is found in the value (Go's `MatchString`,
//!   Python's `re.search`); an author who means the whole value anchors with `^` and `$`.
//! - `VALIDATION_RULE_TYPE_CUSTOM` is ignored: its expression language belongs to the
//!   worker that declared it and the admin cannot evaluate it; the worker sees the values
//!   on every request and can reject them there.
//! - A rule the admin cannot evaluate because the descriptor is broken (a regex that does
//!   not compile, a length that is not a number) is an error on that field, not a panic
//!   and not a silent pass.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

use proto::pb::{self, ConfigFieldType, ValidationRuleType, config_value::Kind};
use regex::{Regex, RegexBuilder};

use crate::config_value::{
    Defaults, NANOS_PER_SECOND, distinct_fields, duration_nanos, form_fields, is_visible, list_keys, present,
    same_value, seconds_text, value_key,
};
use crate::runtime_config;

/// One problem with one field. `field` is the field name; [`validate_config`] prefixes it
/// with `admin.`, `worker.` or `runtime.`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Validates `values` against one form. `current` holds the saved values (for the
/// read-only check); pass an empty map when there are none.
pub fn validate_form(
    form: &pb::ConfigForm,
    values: &HashMap<String, pb::ConfigValue>,
    current: &HashMap<String, pb::ConfigValue>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    check_form(Some(form), None, values, current, "", &mut errors);
    into_result(errors)
}

/// Validates a whole saved config against its descriptor: admin values, worker values and
/// runtime settings. A form the descriptor does not have accepts no values at all.
pub fn validate_config(
    descriptor: &pb::JobTypeDescriptor,
    config: &pb::PersistedJobTypeConfig,
    current: Option<&pb::PersistedJobTypeConfig>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if !config.job_type.is_empty() && config.job_type != descriptor.job_type {
        errors.push(FieldError::new("job_type", format!("must be {:?}", descriptor.job_type)));
    }
    let empty = HashMap::new();
    check_form(
        descriptor.admin_config_form.as_ref(),
        None,
        &config.admin_config_values,
        current.map_or(&empty, |c| &c.admin_config_values),
        "admin.",
        &mut errors,
    );
    check_form(
        descriptor.worker_config_form.as_ref(),
        Some(&descriptor.worker_default_values),
        &config.worker_config_values,
        current.map_or(&empty, |c| &c.worker_config_values),
        "worker.",
        &mut errors,
    );
    if let Some(runtime) = &config.admin_runtime {
        for (setting, n) in runtime_config::number_settings() {
            let value = (n.get)(runtime);
            let message = if value < n.min {
                format!("must be at least {}", n.unit.amount_text(n.min.into()))
            } else if value > n.max {
                format!("must be at most {}", n.unit.amount_text(n.max.into()))
            } else {
                continue;
            };
            errors.push(FieldError::new(format!("runtime.{}", setting.name), message));
        }
    }
    into_result(errors)
}

/// The labels of the visible required admin fields that `config` leaves empty: what an
/// operator must fill in before the job type can do its work (a config bootstrapped from
/// the descriptor's defaults may leave them so).
pub fn missing_required(descriptor: &pb::JobTypeDescriptor, config: &pb::PersistedJobTypeConfig) -> Vec<String> {
    let Err(errors) = validate_config(descriptor, config, Some(config)) else { return Vec::new() };
    let form = descriptor.admin_config_form.as_ref();
    errors
        .iter()
        .filter(|e| e.message.contains("is required"))
        .filter_map(|e| e.field.strip_prefix("admin."))
        .map(|name| {
            crate::config_value::form_fields(form)
                .find(|f| f.name == name && !f.label.is_empty())
                .map_or_else(|| name.to_string(), |f| f.label.clone())
        })
        .collect()
}

/// Whether `name` may be a job type: `^[A-Za-z0-9_.-]+$`, 1 to 128 characters, and not
/// `.` or `..` (a job type becomes a directory name in the data dir).
pub fn is_valid_job_type(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

/// The names of the form's fields marked `sensitive`.
pub fn sensitive_fields(form: Option<&pb::ConfigForm>) -> HashSet<String> {
    form_fields(form).filter(|f| f.sensitive).map(|f| f.name.clone()).collect()
}

/// The config without the values of sensitive admin and worker fields: what the API, the
/// pages and the logs may show.
pub fn redact(descriptor: &pb::JobTypeDescriptor, config: &pb::PersistedJobTypeConfig) -> pb::PersistedJobTypeConfig {
    let mut redacted = config.clone();
    let admin = sensitive_fields(descriptor.admin_config_form.as_ref());
    let worker = sensitive_fields(descriptor.worker_config_form.as_ref());
    redacted.admin_config_values.retain(|name, _| !admin.contains(name));
    redacted.worker_config_values.retain(|name, _| !worker.contains(name));
    redacted
}

fn into_result(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Validates the values of one form (absent form: no fields), appending to `errors`.
/// `extra_defaults` take precedence over the form's own defaults (the descriptor's
/// `worker_default_values` for the worker form).
fn check_form(
    form: Option<&pb::ConfigForm>,
    extra_defaults: Option<&HashMap<String, pb::ConfigValue>>,
    values: &HashMap<String, pb::ConfigValue>,
    current: &HashMap<String, pb::ConfigValue>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    let defaults = Defaults::new(form, extra_defaults);
    let known: HashSet<&str> = form_fields(form).map(|f| f.name.as_str()).collect();
    let mut unknown: Vec<&String> = values.keys().filter(|name| !known.contains(name.as_str())).collect();
    unknown.sort();
    for name in unknown {
        errors.push(FieldError::new(format!("{prefix}{name}"), "is not a field of this form"));
    }

    for field in distinct_fields(form) {
        let submitted = present(values, &field.name);
        let mut messages = Vec::new();

        if field.read_only {
            if let Some(value) = submitted {
                let saved = present(current, &field.name).or_else(|| defaults.get(&field.name));
                if !saved.is_some_and(|s| same_value(s, value)) {
                    messages.push("is read-only".to_string());
                }
            }
        } else if is_visible(field, values, defaults) {
            match submitted.and_then(|v| v.kind.as_ref()) {
                Some(kind) => check_value(field, kind, &mut messages),
                None if field.required => messages.push("is required".to_string()),
                None => {}
            }
        }

        errors.extend(messages.into_iter().map(|m| FieldError::new(format!("{prefix}{}", field.name), m)));
    }
}

/// All checks of one present value of a visible, writable field.
fn check_value(field: &pb::ConfigField, kind: &Kind, messages: &mut Vec<String>) {
    let field_type = field.field_type();
    if let Some(message) = type_mismatch(field, field_type, kind) {
        messages.push(message);
        return;
    }
    if field.required && is_empty(kind) {
        messages.push("is required".to_string());
        return;
    }
    if let Kind::DoubleValue(d) = kind
        && !d.is_finite()
    {
        messages.push("must be a finite number".to_string());
        return;
    }
    if matches!(field_type, ConfigFieldType::Int64 | ConfigFieldType::Double | ConfigFieldType::Duration) {
        check_range(field, kind, messages);
    }
    let blank = matches!(kind, Kind::StringValue(s) if s.is_empty());
    if blank {
        return;
    }
    check_options(field, kind, messages);
    for rule in &field.validation_rules {
        check_rule(rule, kind, messages);
    }
}

fn type_mismatch(field: &pb::ConfigField, field_type: ConfigFieldType, kind: &Kind) -> Option<String> {
    let expected = match field_type {
        ConfigFieldType::Unspecified => return None,
        ConfigFieldType::Bool if matches!(kind, Kind::BoolValue(_)) => return None,
        ConfigFieldType::Bool => "must be true or false",
        ConfigFieldType::Int64 if matches!(kind, Kind::Int64Value(_)) => return None,
        ConfigFieldType::Int64 => "must be an integer",
        ConfigFieldType::Double if matches!(kind, Kind::DoubleValue(_) | Kind::Int64Value(_)) => {
            return None;
        }
        ConfigFieldType::Double => "must be a number",
        ConfigFieldType::String if matches!(kind, Kind::StringValue(_)) => return None,
        ConfigFieldType::String => "must be a string",
        ConfigFieldType::Bytes if matches!(kind, Kind::BytesValue(_)) => return None,
        ConfigFieldType::Bytes => "must be bytes",
        ConfigFieldType::Duration if matches!(kind, Kind::DurationValue(_)) => return None,
        ConfigFieldType::Duration => "must be a duration",
        ConfigFieldType::Enum if matches!(kind, Kind::StringValue(_)) => return None,
        ConfigFieldType::Enum => return Some(options_message(field, "must be")),
        ConfigFieldType::List if list_len(kind).is_some() => return None,
        ConfigFieldType::List => "must be a list",
        ConfigFieldType::Object if matches!(kind, Kind::MapValue(_)) => return None,
        ConfigFieldType::Object => "must be an object",
    };
    Some(expected.to_string())
}

fn is_empty(kind: &Kind) -> bool {
    match kind {
        Kind::StringValue(s) => s.is_empty(),
        Kind::BytesValue(b) => b.is_empty(),
        Kind::MapValue(m) => m.fields.is_empty(),
        other => list_len(other) == Some(0),
    }
}

fn list_len(kind: &Kind) -> Option<usize> {
    match kind {
        Kind::StringList(l) => Some(l.values.len()),
        Kind::Int64List(l) => Some(l.values.len()),
        Kind::DoubleList(l) => Some(l.values.len()),
        Kind::BoolList(l) => Some(l.values.len()),
        Kind::ListValue(l) => Some(l.values.len()),
        _ => None,
    }
}

/// A number in the domain of the field's value: integers exactly, durations in nanoseconds.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
    Nanos(i128),
}

impl Num {
    fn of(kind: &Kind) -> Option<Num> {
        match kind {
            Kind::Int64Value(i) => Some(Num::Int(*i)),
            Kind::DoubleValue(d) => Some(Num::Float(*d)),
            Kind::DurationValue(d) => Some(Num::Nanos(duration_nanos(d))),
            _ => None,
        }
    }

    /// A bound converted to the value's domain: a number bound of a duration field is in
    /// seconds. `None` when the two cannot be compared.
    fn bound_for(value: Num, bound: Num) -> Option<Num> {
        match (value, bound) {
            (Num::Nanos(_), Num::Int(s)) => Some(Num::Nanos(i128::from(s) * NANOS_PER_SECOND)),
            (Num::Nanos(_), Num::Float(s)) if s.is_finite() => Some(Num::Nanos((s * NANOS_PER_SECOND as f64) as i128)),
            (Num::Nanos(_), Num::Nanos(_)) => Some(bound),
            (Num::Int(_) | Num::Float(_), Num::Int(_)) => Some(bound),
            (Num::Int(_) | Num::Float(_), Num::Float(f)) if f.is_finite() => Some(bound),
            _ => None,
        }
    }

    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Nanos(a), Num::Nanos(b)) => Some(a.cmp(&b)),
            (Num::Int(a), Num::Float(b)) => (a as f64).partial_cmp(&b),
            (Num::Float(a), Num::Int(b)) => a.partial_cmp(&(b as f64)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            _ => None,
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
            Num::Nanos(n) => write!(f, "{}s", seconds_text(*n)),
        }
    }
}

fn check_range(field: &pb::ConfigField, kind: &Kind, messages: &mut Vec<String>) {
    let Some(value) = Num::of(kind) else {
        return;
    };
    let bounds = [
        ("min_value", &field.min_value, Ordering::Less, "at least"),
        ("max_value", &field.max_value, Ordering::Greater, "at most"),
    ];
    for (what, bound, violation, phrase) in bounds {
        let Some(bound_kind) = bound.as_ref().and_then(|b| b.kind.as_ref()) else {
            continue;
        };
        let Some(bound) = Num::of(bound_kind).and_then(|b| Num::bound_for(value, b)) else {
            messages.push(format!("cannot be checked: the descriptor's {what} does not fit this field"));
            continue;
        };
        if value.compare(bound) == Some(violation) {
            messages.push(format!("must be {phrase} {bound}"));
        }
    }
}

/// "must be one of: a, b" with the selectable options (at most 20 listed).
fn options_message(field: &pb::ConfigField, lead: &str) -> String {
    const SHOWN: usize = 20;
    let enabled: Vec<&str> = field.options.iter().filter(|o| !o.disabled).map(|o| o.value.as_str()).collect();
    if enabled.is_empty() {
        return if field.options.is_empty() {
            format!("{lead} a string")
        } else {
            "has no selectable option".to_string()
        };
    }
    let mut list = enabled[..enabled.len().min(SHOWN)].join(", ");
    if enabled.len() > SHOWN {
        list.push_str(", ...");
    }
    format!("{lead} one of: {list}")
}

/// Options restrict a scalar value and every item of a list, by value key. A field without
/// options (including an ENUM whose descriptor lists none) has nothing to check against.
/// A duration is not restricted: the forms show it as a number and a unit, not a choice.
fn check_options(field: &pb::ConfigField, kind: &Kind, messages: &mut Vec<String>) {
    if field.options.is_empty() || matches!(kind, Kind::DurationValue(_)) {
        return;
    }
    let allowed = |key: &Option<String>| {
        key.as_deref().is_some_and(|k| field.options.iter().any(|o| !o.disabled && o.value == k))
    };
    if let Some(items) = list_keys(kind) {
        if !items.iter().all(allowed) {
            messages.push(options_message(field, "every item must be"));
        }
    } else if let Some(key) = value_key(kind)
        && !allowed(&Some(key))
    {
        messages.push(options_message(field, "must be"));
    }
}

fn rule_message(rule: &pb::ValidationRule, default: impl FnOnce() -> String) -> String {
    if rule.error_message.is_empty() { default() } else { rule.error_message.clone() }
}

fn check_rule(rule: &pb::ValidationRule, kind: &Kind, messages: &mut Vec<String>) {
    match rule.r#type() {
        ValidationRuleType::Regex => {
            let Ok(re) = compiled_regex(&rule.expression) else {
                messages.push("cannot be checked: the descriptor's validation regex is invalid".to_string());
                return;
            };
            let must_match = || format!("must match {}", rule.expression);
            match kind {
                Kind::StringValue(s) if !re.is_match(s) => messages.push(rule_message(rule, must_match)),
                Kind::StringList(_) | Kind::ListValue(_) => {
                    let strings: Vec<&str> = match kind {
                        Kind::StringList(l) => l.values.iter().map(String::as_str).collect(),
                        Kind::ListValue(l) => l
                            .values
                            .iter()
                            .filter_map(|v| match &v.kind {
                                Some(Kind::StringValue(s)) => Some(s.as_str()),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    if let Some(i) = strings.iter().position(|s| !re.is_match(s)) {
                        messages.push(rule_message(rule, || format!("item {} must match {}", i + 1, rule.expression)));
                    }
                }
                _ => {}
            }
        }
        rule_type @ (ValidationRuleType::MinLength | ValidationRuleType::MaxLength) => {
            let Some(limit) = rule_limit(rule, messages) else {
                return;
            };
            let Kind::StringValue(s) = kind else {
                return;
            };
            let len = s.chars().count();
            if rule_type == ValidationRuleType::MinLength && len < limit {
                messages
                    .push(rule_message(rule, || format!("must be at least {limit} {}", plural(limit, "character"))));
            } else if rule_type == ValidationRuleType::MaxLength && len > limit {
                messages.push(rule_message(rule, || format!("must be at most {limit} {}", plural(limit, "character"))));
            }
        }
        rule_type @ (ValidationRuleType::MinItems | ValidationRuleType::MaxItems) => {
            let Some(limit) = rule_limit(rule, messages) else {
                return;
            };
            let Some(len) = list_len(kind) else {
                return;
            };
            if rule_type == ValidationRuleType::MinItems && len < limit {
                messages.push(rule_message(rule, || format!("must have at least {limit} {}", plural(limit, "item"))));
            } else if rule_type == ValidationRuleType::MaxItems && len > limit {
                messages.push(rule_message(rule, || format!("must have at most {limit} {}", plural(limit, "item"))));
            }
        }
        // See the module docs: CUSTOM is the worker's to evaluate.
        ValidationRuleType::Custom | ValidationRuleType::Unspecified => {}
    }
}

fn rule_limit(rule: &pb::ValidationRule, messages: &mut Vec<String>) -> Option<usize> {
    match rule.expression.trim().parse::<usize>() {
        Ok(limit) => Some(limit),
        Err(_) => {
            messages.push(format!(
                "cannot be checked: the descriptor's {} rule is not a whole number",
                rule.r#type().as_str_name().trim_start_matches("VALIDATION_RULE_TYPE_").to_lowercase()
            ));
            None
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

/// The regex for a REGEX rule. A value passes when the expression is found in it, as Go's
/// `MatchString`, Python's `re.search` and JavaScript's `test` have it (what plugin
/// authors, SeaweedFS's among them, expect); authors anchor with `^`/`$` when they mean
/// the whole value. Compiled regexes are cached (descriptors repeat the same few); the
/// size limit keeps a hostile descriptor from making the admin compile a huge automaton.
fn compiled_regex(expression: &str) -> Result<Regex, String> {
    const CACHE_CAPACITY: usize = 256;
    type Cache = Mutex<HashMap<String, Result<Regex, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);

    if let Some(hit) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(expression) {
        return hit.clone();
    }
    let compiled = RegexBuilder::new(expression).size_limit(1 << 20).build().map_err(|e| e.to_string());
    let mut map = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= CACHE_CAPACITY {
        map.clear();
    }
    map.insert(expression.to_string(), compiled.clone());
    compiled
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_config::{DAY_SECONDS, WEEK_SECONDS};
    use crate::test_support::cv::{b, d, i, ints, s, secs, strs, v};

    // ---- builders -------------------------------------------------------------------

    fn field(name: &str, field_type: ConfigFieldType) -> pb::ConfigField {
        pb::ConfigField { name: name.into(), field_type: field_type as i32, ..Default::default() }
    }

    fn form(fields: Vec<pb::ConfigField>) -> pb::ConfigForm {
        pb::ConfigForm {
            form_id: "f".into(),
            sections: vec![pb::ConfigSection { section_id: "s".into(), fields, ..Default::default() }],
            ..Default::default()
        }
    }

    fn option(value: &str, disabled: bool) -> pb::ConfigOption {
        pb::ConfigOption { value: value.into(), label: value.into(), disabled, ..Default::default() }
    }
    fn rule(t: ValidationRuleType, expression: &str) -> pb::ValidationRule {
        pb::ValidationRule { r#type: t as i32, expression: expression.into(), error_message: String::new() }
    }
    fn values(pairs: &[(&str, pb::ConfigValue)]) -> HashMap<String, pb::ConfigValue> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
    fn none() -> HashMap<String, pb::ConfigValue> {
        HashMap::new()
    }

    /// The messages of all errors, as "field: message", for compact assertions.
    fn check(f: &pb::ConfigForm, vals: &[(&str, pb::ConfigValue)]) -> Vec<String> {
        check_with_current(f, vals, &none())
    }
    fn check_with_current(
        f: &pb::ConfigForm,
        vals: &[(&str, pb::ConfigValue)],
        current: &HashMap<String, pb::ConfigValue>,
    ) -> Vec<String> {
        match validate_form(f, &values(vals), current) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    // ---- types ----------------------------------------------------------------------

    #[test]
    fn each_field_type_accepts_its_own_kind_of_value() {
        let f = form(vec![
            field("bool", ConfigFieldType::Bool),
            field("int", ConfigFieldType::Int64),
            field("double", ConfigFieldType::Double),
            field("string", ConfigFieldType::String),
            field("bytes", ConfigFieldType::Bytes),
            field("duration", ConfigFieldType::Duration),
            field("list", ConfigFieldType::List),
            field("object", ConfigFieldType::Object),
            field("anything", ConfigFieldType::Unspecified),
        ]);
        let object = v(Kind::MapValue(pb::ValueMap { fields: values(&[("k", s("v"))]) }));
        assert_eq!(
            check(
                &f,
                &[
                    ("bool", b(true)),
                    ("int", i(3)),
                    ("double", d(0.5)),
                    ("string", s("x")),
                    ("bytes", v(Kind::BytesValue(vec![1, 2]))),
                    ("duration", secs(5)),
                    ("list", ints(&[1, 2])),
                    ("object", object),
                    ("anything", s("whatever")),
                ]
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_double_field_accepts_an_integer() {
        let f = form(vec![field("ratio", ConfigFieldType::Double)]);
        assert!(check(&f, &[("ratio", i(2))]).is_empty());
    }

    #[test]
    fn a_value_of_the_wrong_type_is_rejected_with_what_was_expected() {
        let f = form(vec![
            field("bool", ConfigFieldType::Bool),
            field("int", ConfigFieldType::Int64),
            field("double", ConfigFieldType::Double),
            field("string", ConfigFieldType::String),
            field("bytes", ConfigFieldType::Bytes),
            field("duration", ConfigFieldType::Duration),
            field("list", ConfigFieldType::List),
            field("object", ConfigFieldType::Object),
        ]);
        assert_eq!(
            check(
                &f,
                &[
                    ("bool", s("true")),
                    ("int", d(1.0)),
                    ("double", s("1")),
                    ("string", i(1)),
                    ("bytes", s("x")),
                    ("duration", i(5)),
                    ("list", s("a,b")),
                    ("object", strs(&["a"])),
                ]
            ),
            vec![
                "bool: must be true or false",
                "int: must be an integer",
                "double: must be a number",
                "string: must be a string",
                "bytes: must be bytes",
                "duration: must be a duration",
                "list: must be a list",
                "object: must be an object",
            ]
        );
    }

    #[test]
    fn an_enum_must_be_a_string_naming_an_enabled_option() {
        let mut mode = field("mode", ConfigFieldType::Enum);
        mode.options = vec![option("fast", false), option("safe", false), option("old", true)];
        let f = form(vec![mode]);
        assert!(check(&f, &[("mode", s("fast"))]).is_empty());
        assert_eq!(check(&f, &[("mode", s("slow"))]), vec!["mode: must be one of: fast, safe"]);
        assert_eq!(check(&f, &[("mode", s("old"))]), vec!["mode: must be one of: fast, safe"]);
        assert_eq!(check(&f, &[("mode", i(1))]), vec!["mode: must be one of: fast, safe"]);
    }

    #[test]
    fn a_non_finite_double_is_rejected() {
        let f = form(vec![field("ratio", ConfigFieldType::Double)]);
        assert_eq!(check(&f, &[("ratio", d(f64::NAN))]), vec!["ratio: must be a finite number"]);
        assert_eq!(check(&f, &[("ratio", d(f64::INFINITY))]), vec!["ratio: must be a finite number"]);
    }

    // ---- unknown, required, visibility, read-only ---------------------------------

    #[test]
    fn an_unknown_field_name_is_an_error() {
        let f = form(vec![field("known", ConfigFieldType::String)]);
        assert_eq!(check(&f, &[("known", s("x")), ("typo", s("y"))]), vec!["typo: is not a field of this form"]);
    }

    #[test]
    fn a_required_field_must_be_present_and_not_empty() {
        let mut name = field("name", ConfigFieldType::String);
        name.required = true;
        let mut tags = field("tags", ConfigFieldType::List);
        tags.required = true;
        let f = form(vec![name, tags]);
        assert_eq!(check(&f, &[]), vec!["name: is required", "tags: is required"]);
        assert_eq!(check(&f, &[("name", s("")), ("tags", strs(&[]))]), vec!["name: is required", "tags: is required"]);
        assert_eq!(
            check(&f, &[("name", pb::ConfigValue { kind: None }), ("tags", strs(&["a"]))]),
            vec!["name: is required"]
        );
        assert!(check(&f, &[("name", s("n")), ("tags", strs(&["a"]))]).is_empty());
    }

    fn form_with_conditional_field() -> pb::ConfigForm {
        let mode = field("mode", ConfigFieldType::String);
        let mut bucket = field("bucket", ConfigFieldType::String);
        bucket.required = true;
        bucket.visible_when_field = "mode".into();
        bucket.visible_when_equals = Some(s("s3"));
        bucket.validation_rules = vec![rule(ValidationRuleType::MinLength, "3")];
        let mut f = form(vec![mode, bucket]);
        f.default_values = values(&[("mode", s("local"))]);
        f
    }

    #[test]
    fn a_hidden_field_is_neither_required_nor_validated() {
        let f = form_with_conditional_field();
        assert!(check(&f, &[]).is_empty());
        assert!(check(&f, &[("mode", s("local")), ("bucket", s("x"))]).is_empty());
    }

    #[test]
    fn a_visible_conditional_field_is_required_and_validated() {
        let f = form_with_conditional_field();
        assert_eq!(check(&f, &[("mode", s("s3"))]), vec!["bucket: is required"]);
        assert_eq!(check(&f, &[("mode", s("s3")), ("bucket", s("x"))]), vec!["bucket: must be at least 3 characters"]);
    }

    #[test]
    fn visibility_falls_back_to_the_form_default_of_the_controlling_field() {
        let mut f = form_with_conditional_field();
        f.default_values = values(&[("mode", s("s3"))]);
        assert_eq!(check(&f, &[]), vec!["bucket: is required"]);
    }

    #[test]
    fn visibility_treats_an_integer_and_an_equal_double_as_equal() {
        let level = field("level", ConfigFieldType::Double);
        let mut extra = field("extra", ConfigFieldType::String);
        extra.required = true;
        extra.visible_when_field = "level".into();
        extra.visible_when_equals = Some(d(2.0));
        let f = form(vec![level, extra]);
        assert_eq!(check(&f, &[("level", i(2))]), vec!["extra: is required"]);
        assert!(check(&f, &[("level", i(3))]).is_empty());
    }

    #[test]
    fn a_read_only_field_cannot_be_changed_but_may_be_resubmitted() {
        let mut id = field("cluster_id", ConfigFieldType::String);
        id.read_only = true;
        let f = form(vec![id]);
        let current = values(&[("cluster_id", s("c1"))]);
        assert!(check_with_current(&f, &[("cluster_id", s("c1"))], &current).is_empty());
        assert!(check_with_current(&f, &[], &current).is_empty());
        assert_eq!(check_with_current(&f, &[("cluster_id", s("c2"))], &current), vec!["cluster_id: is read-only"]);
    }

    #[test]
    fn a_read_only_field_without_a_saved_value_may_only_hold_its_default() {
        let mut id = field("cluster_id", ConfigFieldType::String);
        id.read_only = true;
        let mut f = form(vec![id]);
        f.default_values = values(&[("cluster_id", s("default"))]);
        assert!(check(&f, &[("cluster_id", s("default"))]).is_empty());
        assert_eq!(check(&f, &[("cluster_id", s("other"))]), vec!["cluster_id: is read-only"]);
    }

    // ---- ranges ---------------------------------------------------------------------

    #[test]
    fn integers_are_checked_against_min_and_max() {
        let mut n = field("n", ConfigFieldType::Int64);
        n.min_value = Some(i(1));
        n.max_value = Some(i(100));
        let f = form(vec![n]);
        assert!(check(&f, &[("n", i(1))]).is_empty());
        assert!(check(&f, &[("n", i(100))]).is_empty());
        assert_eq!(check(&f, &[("n", i(0))]), vec!["n: must be at least 1"]);
        assert_eq!(check(&f, &[("n", i(101))]), vec!["n: must be at most 100"]);
    }

    #[test]
    fn integers_near_the_limits_of_i64_compare_exactly() {
        let mut n = field("n", ConfigFieldType::Int64);
        n.max_value = Some(i(i64::MAX - 1));
        let f = form(vec![n]);
        assert!(check(&f, &[("n", i(i64::MAX - 1))]).is_empty());
        assert_eq!(check(&f, &[("n", i(i64::MAX))]), vec![format!("n: must be at most {}", i64::MAX - 1)]);
    }

    #[test]
    fn doubles_are_checked_against_min_and_max_of_either_number_kind() {
        let mut r = field("ratio", ConfigFieldType::Double);
        r.min_value = Some(d(0.1));
        r.max_value = Some(i(1));
        let f = form(vec![r]);
        assert!(check(&f, &[("ratio", d(0.5))]).is_empty());
        assert!(check(&f, &[("ratio", i(1))]).is_empty());
        assert_eq!(check(&f, &[("ratio", d(0.05))]), vec!["ratio: must be at least 0.1"]);
        assert_eq!(check(&f, &[("ratio", d(1.5))]), vec!["ratio: must be at most 1"]);
    }

    #[test]
    fn durations_are_checked_against_duration_or_second_bounds() {
        let mut t = field("timeout", ConfigFieldType::Duration);
        t.min_value = Some(secs(1));
        t.max_value = Some(i(3600));
        let f = form(vec![t]);
        assert!(check(&f, &[("timeout", secs(60))]).is_empty());
        assert_eq!(check(&f, &[("timeout", secs(7200))]), vec!["timeout: must be at most 3600s"]);
        let half_second = v(Kind::DurationValue(prost_types::Duration { seconds: 0, nanos: 500_000_000 }));
        assert_eq!(check(&f, &[("timeout", half_second)]), vec!["timeout: must be at least 1s"]);
    }

    #[test]
    fn min_and_max_do_not_apply_to_strings_or_lists() {
        let mut name = field("name", ConfigFieldType::String);
        name.max_value = Some(i(1));
        let mut ids = field("ids", ConfigFieldType::List);
        ids.max_value = Some(i(1));
        let f = form(vec![name, ids]);
        assert!(check(&f, &[("name", s("long name")), ("ids", ints(&[5, 6, 7]))]).is_empty());
    }

    #[test]
    fn a_bound_that_is_not_a_number_is_reported_as_a_descriptor_problem() {
        let mut n = field("n", ConfigFieldType::Int64);
        n.max_value = Some(s("ten"));
        let f = form(vec![n]);
        assert_eq!(
            check(&f, &[("n", i(5))]),
            vec!["n: cannot be checked: the descriptor's max_value does not fit this field"]
        );
    }

    // ---- options --------------------------------------------------------------------

    #[test]
    fn a_string_field_with_options_accepts_only_enabled_options() {
        let mut zone = field("zone", ConfigFieldType::String);
        zone.options = vec![option("a", false), option("b", true)];
        let f = form(vec![zone]);
        assert!(check(&f, &[("zone", s("a"))]).is_empty());
        assert_eq!(check(&f, &[("zone", s("b"))]), vec!["zone: must be one of: a"]);
        // Left empty in an optional field: not filled in, not filled in wrongly.
        assert!(check(&f, &[("zone", s(""))]).is_empty());
    }

    #[test]
    fn every_item_of_a_multi_select_must_be_an_option() {
        let mut disks = field("disks", ConfigFieldType::List);
        disks.widget = pb::ConfigWidget::MultiSelect as i32;
        disks.options = vec![option("hdd", false), option("ssd", false)];
        let f = form(vec![disks]);
        assert!(check(&f, &[("disks", strs(&["hdd", "ssd"]))]).is_empty());
        assert!(check(&f, &[("disks", strs(&[]))]).is_empty());
        assert_eq!(check(&f, &[("disks", strs(&["hdd", "tape"]))]), vec!["disks: every item must be one of: hdd, ssd"]);
    }

    #[test]
    fn integer_list_items_are_matched_against_option_values() {
        let mut sizes = field("sizes", ConfigFieldType::List);
        sizes.options = vec![option("1", false), option("2", false)];
        let f = form(vec![sizes]);
        assert!(check(&f, &[("sizes", ints(&[1, 2]))]).is_empty());
        assert_eq!(check(&f, &[("sizes", ints(&[3]))]), vec!["sizes: every item must be one of: 1, 2"]);
    }

    #[test]
    fn an_enum_whose_options_are_all_disabled_accepts_nothing() {
        let mut mode = field("mode", ConfigFieldType::Enum);
        mode.options = vec![option("x", true)];
        let f = form(vec![mode]);
        assert_eq!(check(&f, &[("mode", s("x"))]), vec!["mode: has no selectable option"]);
    }

    // ---- rules ----------------------------------------------------------------------

    #[test]
    fn a_regex_rule_passes_when_the_expression_is_found_in_the_value() {
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules = vec![rule(ValidationRuleType::Regex, "[a-z]+")];
        let f = form(vec![name]);
        assert!(check(&f, &[("name", s("abc"))]).is_empty());
        assert!(check(&f, &[("name", s("1abc2"))]).is_empty(), "found inside the value, as Go's MatchString");
        assert_eq!(check(&f, &[("name", s("123"))]), vec!["name: must match [a-z]+"]);
    }

    #[test]
    fn anchors_are_the_authors_way_to_mean_the_whole_value() {
        let mut path = field("path", ConfigFieldType::String);
        path.validation_rules = vec![rule(ValidationRuleType::Regex, "^/")];
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules = vec![rule(ValidationRuleType::Regex, "^[a-z]+$|foo")];
        let f = form(vec![path, name]);
        assert!(check(&f, &[("path", s("/tmp"))]).is_empty(), "a SeaweedFS-style prefix rule accepts /tmp");
        assert_eq!(check(&f, &[("path", s("tmp"))]), vec!["path: must match ^/"]);
        assert!(check(&f, &[("name", s("abc"))]).is_empty());
        assert!(check(&f, &[("name", s("a foo b"))]).is_empty(), "the unanchored branch is found anywhere");
        assert_eq!(check(&f, &[("name", s("abc1"))]), vec!["name: must match ^[a-z]+$|foo"]);
    }

    #[test]
    fn a_regex_rule_applies_to_each_item_of_a_string_list() {
        let mut hosts = field("hosts", ConfigFieldType::List);
        hosts.validation_rules = vec![rule(ValidationRuleType::Regex, "^[a-z]+:[0-9]+$")];
        let f = form(vec![hosts]);
        assert!(check(&f, &[("hosts", strs(&["a:1", "b:2"]))]).is_empty());
        assert_eq!(check(&f, &[("hosts", strs(&["a:1", "b"]))]), vec!["hosts: item 2 must match ^[a-z]+:[0-9]+$"]);
    }

    #[test]
    fn a_rule_error_message_replaces_the_default_message() {
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules = vec![pb::ValidationRule {
            r#type: ValidationRuleType::Regex as i32,
            expression: "[a-z]+".into(),
            error_message: "lowercase letters only".into(),
        }];
        let f = form(vec![name]);
        assert_eq!(check(&f, &[("name", s("ABC"))]), vec!["name: lowercase letters only"]);
    }

    #[test]
    fn a_bad_regex_in_the_descriptor_is_an_error_naming_the_field_not_a_panic() {
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules = vec![rule(ValidationRuleType::Regex, "([a-z")];
        let f = form(vec![name]);
        assert_eq!(
            check(&f, &[("name", s("abc"))]),
            vec!["name: cannot be checked: the descriptor's validation regex is invalid"]
        );
        // The cached failure gives the same answer the second time.
        assert_eq!(check(&f, &[("name", s("abc"))]).len(), 1);
    }

    #[test]
    fn min_and_max_length_count_characters_not_bytes() {
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules =
            vec![rule(ValidationRuleType::MinLength, "2"), rule(ValidationRuleType::MaxLength, " 3 ")];
        let f = form(vec![name]);
        assert!(check(&f, &[("name", s("ééé"))]).is_empty());
        assert_eq!(check(&f, &[("name", s("é"))]), vec!["name: must be at least 2 characters"]);
        assert_eq!(check(&f, &[("name", s("abcd"))]), vec!["name: must be at most 3 characters"]);
    }

    #[test]
    fn a_length_rule_that_is_not_a_number_is_reported_as_a_descriptor_problem() {
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules = vec![rule(ValidationRuleType::MaxLength, "ten")];
        let f = form(vec![name]);
        assert_eq!(
            check(&f, &[("name", s("abc"))]),
            vec!["name: cannot be checked: the descriptor's max_length rule is not a whole number"]
        );
    }

    #[test]
    fn min_and_max_items_count_list_entries() {
        let mut ids = field("ids", ConfigFieldType::List);
        ids.validation_rules = vec![rule(ValidationRuleType::MinItems, "1"), rule(ValidationRuleType::MaxItems, "2")];
        let f = form(vec![ids]);
        assert!(check(&f, &[("ids", ints(&[1, 2]))]).is_empty());
        assert_eq!(check(&f, &[("ids", ints(&[]))]), vec!["ids: must have at least 1 item"]);
        assert_eq!(check(&f, &[("ids", ints(&[1, 2, 3]))]), vec!["ids: must have at most 2 items"]);
    }

    #[test]
    fn a_custom_rule_is_left_to_the_worker() {
        let mut name = field("name", ConfigFieldType::String);
        name.validation_rules = vec![rule(ValidationRuleType::Custom, "isHostname(value)")];
        let f = form(vec![name]);
        assert!(check(&f, &[("name", s("not a hostname!"))]).is_empty());
    }

    #[test]
    fn error_messages_never_echo_the_submitted_value() {
        let mut secret = field("secret", ConfigFieldType::String);
        secret.sensitive = true;
        secret.validation_rules =
            vec![rule(ValidationRuleType::Regex, "^[0-9]+$"), rule(ValidationRuleType::MaxLength, "3")];
        let f = form(vec![secret]);
        let errors = check(&f, &[("secret", s("hunter2hunter2"))]);
        assert_eq!(errors.len(), 2);
        assert!(errors.iter().all(|e| !e.contains("hunter2")));
    }

    // ---- whole configs --------------------------------------------------------------

    fn descriptor() -> pb::JobTypeDescriptor {
        let mut limit = field("limit", ConfigFieldType::Int64);
        limit.max_value = Some(i(100));
        let mut token = field("token", ConfigFieldType::String);
        token.sensitive = true;
        let mut region = field("region", ConfigFieldType::String);
        region.required = true;
        let mut worker_form = form(vec![region, token.clone()]);
        worker_form.default_values = values(&[("region", s("form-default"))]);
        pb::JobTypeDescriptor {
            job_type: "vacuum".into(),
            descriptor_version: 1,
            admin_config_form: Some(form(vec![limit, token])),
            worker_config_form: Some(worker_form),
            ..Default::default()
        }
    }

    fn config() -> pb::PersistedJobTypeConfig {
        pb::PersistedJobTypeConfig {
            job_type: "vacuum".into(),
            admin_config_values: values(&[("limit", i(5)), ("token", s("t"))]),
            worker_config_values: values(&[("region", s("eu")), ("token", s("w"))]),
            admin_runtime: Some(crate::runtime_config::fallback()),
            ..Default::default()
        }
    }

    fn fields_of(result: Result<(), Vec<FieldError>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_config_passes() {
        assert_eq!(validate_config(&descriptor(), &config(), None), Ok(()));
    }

    #[test]
    fn config_errors_are_prefixed_with_their_form() {
        let mut c = config();
        c.admin_config_values.insert("limit".into(), i(500));
        c.worker_config_values.remove("region");
        c.worker_config_values.insert("typo".into(), s("x"));
        assert_eq!(
            fields_of(validate_config(&descriptor(), &c, None)),
            vec!["admin.limit", "worker.typo", "worker.region"]
        );
    }

    #[test]
    fn a_missing_form_accepts_no_values() {
        let mut d = descriptor();
        d.worker_config_form = None;
        let mut c = config();
        c.worker_config_values = values(&[("region", s("eu"))]);
        assert_eq!(fields_of(validate_config(&d, &c, None)), vec!["worker.region"]);
        c.worker_config_values.clear();
        assert_eq!(validate_config(&d, &c, None), Ok(()));
    }

    #[test]
    fn a_config_for_another_job_type_is_rejected() {
        let mut c = config();
        c.job_type = "other".into();
        assert_eq!(fields_of(validate_config(&descriptor(), &c, None)), vec!["job_type"]);
    }

    #[test]
    fn runtime_settings_must_be_within_bounds() {
        let mut c = config();
        c.admin_runtime = Some(pb::AdminRuntimeConfig {
            detection_interval_minutes: -1,
            detection_timeout_seconds: -1,
            max_jobs_per_detection: -1,
            global_execution_concurrency: -1,
            per_worker_execution_concurrency: -1,
            retry_limit: 101,
            retry_backoff_seconds: -1,
            job_type_max_runtime_seconds: WEEK_SECONDS + 1,
            execution_timeout_seconds: -1,
            enabled: true,
        });
        let errors = validate_config(&descriptor(), &c, None).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "runtime.detection_interval_minutes",
                "runtime.detection_timeout_seconds",
                "runtime.max_jobs_per_detection",
                "runtime.global_execution_concurrency",
                "runtime.per_worker_execution_concurrency",
                "runtime.retry_limit",
                "runtime.retry_backoff_seconds",
                "runtime.job_type_max_runtime_seconds",
                "runtime.execution_timeout_seconds",
            ]
        );
        assert_eq!(errors[5].message, "must be at most 100");
        assert_eq!(errors[0].message, "must be at least 0 minutes");
        assert_eq!(errors[2].message, "must be at least 0", "a count has no unit");
        assert_eq!(errors[7].message, "must be at most 604800 seconds (7 days)", "a duration says its unit");
    }

    #[test]
    fn runtime_zeros_and_upper_bounds_are_accepted() {
        let mut c = config();
        c.admin_runtime = Some(pb::AdminRuntimeConfig::default());
        assert_eq!(validate_config(&descriptor(), &c, None), Ok(()));
        c.admin_runtime = Some(pb::AdminRuntimeConfig {
            enabled: true,
            detection_interval_minutes: 525_600,
            detection_timeout_seconds: WEEK_SECONDS,
            max_jobs_per_detection: 1_000_000,
            global_execution_concurrency: 10_000,
            per_worker_execution_concurrency: 10_000,
            retry_limit: 100,
            retry_backoff_seconds: DAY_SECONDS,
            job_type_max_runtime_seconds: WEEK_SECONDS,
            execution_timeout_seconds: WEEK_SECONDS,
        });
        assert_eq!(validate_config(&descriptor(), &c, None), Ok(()));
    }

    #[test]
    fn worker_default_values_count_for_visibility() {
        let mut d = descriptor();
        let mut extra = field("extra", ConfigFieldType::String);
        extra.required = true;
        extra.visible_when_field = "region".into();
        extra.visible_when_equals = Some(s("descriptor-default"));
        d.worker_config_form.as_mut().unwrap().sections[0].fields.push(extra);
        d.worker_default_values = values(&[("region", s("descriptor-default"))]);
        let mut c = config();
        c.worker_config_values.remove("region");
        // region itself is required and missing; extra is visible through the default.
        assert_eq!(fields_of(validate_config(&d, &c, None)), vec!["worker.region", "worker.extra"]);
    }

    // ---- names and sensitive fields -------------------------------------------------

    #[test]
    fn job_type_names_are_checked_like_directory_names() {
        for good in ["vacuum", "erasure_coding", "a.b-c", "A1", ".hidden", "..x", &"a".repeat(128)] {
            assert!(is_valid_job_type(good), "{good:?} should be valid");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "a b", "vacúum", "日本", "a\0b", &"a".repeat(129)] {
            assert!(!is_valid_job_type(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn sensitive_fields_are_listed_per_form() {
        let d = descriptor();
        assert_eq!(sensitive_fields(d.admin_config_form.as_ref()), HashSet::from(["token".to_string()]));
        assert!(sensitive_fields(None).is_empty());
    }

    #[test]
    fn redact_removes_sensitive_values_and_keeps_the_rest() {
        let r = redact(&descriptor(), &config());
        assert_eq!(r.admin_config_values, values(&[("limit", i(5))]));
        assert_eq!(r.worker_config_values, values(&[("region", s("eu"))]));
        assert_eq!(r.admin_runtime, config().admin_runtime);
    }
}
