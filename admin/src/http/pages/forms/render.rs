//! Rendering: a descriptor's form plus saved or posted values as views for the templates
//! (each field's control, value, options, bounds, hint, visibility condition and error),
//! and values as text for tables.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use proto::pb::{self, ConfigFieldType as Type, config_value::Kind};

use super::{
    ItemKind, Source, UnitChoice, Which, control_of,
    kv::{self, KvRow},
    list_item_kind, sentence, unit_choices,
};
use crate::config_value::{
    DURATION_CHOICES, NANOS_PER_SECOND, distinct_fields, duration_display, duration_display_in, duration_nanos,
    duration_text, in_words, list_keys, present, unit_named, value_key,
};

/// One form (admin or worker) ready for the template.
pub struct FormView {
    pub title: String,
    pub description: String,
    pub sections: Vec<SectionView>,
}

pub struct SectionView {
    pub title: String,
    pub description: String,
    pub fields: Vec<FieldView>,
}

/// One field ready for the template. All text in here is escaped by askama on output.
pub struct FieldView {
    /// The input's name: `admin.<field>` or `worker.<field>`.
    pub name: String,
    /// The HTML id (built from the position, so any field name is safe).
    pub id: String,
    pub label: String,
    pub description: String,
    pub help: String,
    pub placeholder: String,
    /// checkbox, select, checkboxes, text, textarea, number, duration, password, lines, json,
    /// base64, kv
    pub control: &'static str,
    pub required: bool,
    pub read_only: bool,
    pub sensitive: bool,
    /// The text shown in the input (never a sensitive value).
    pub value: String,
    pub checked: bool,
    pub options: Vec<OptionView>,
    /// A duration's unit: ms, s, min, h or d.
    pub unit: &'static str,
    /// A duration's unit select (`unit` selected).
    pub units: Vec<UnitChoice>,
    /// A map's rows (the "kv" control).
    pub rows: Vec<KvRow>,
    pub min: String,
    pub max: String,
    pub step: &'static str,
    /// Sensitive only: whether a value is saved (the input stays blank either way).
    pub has_saved_secret: bool,
    /// Sensitive only: the operator typed a new value but the save failed elsewhere; the
    /// typed value is not sent back to the browser, so it must be entered again.
    pub retype_secret: bool,
    /// The controlling input's name and the value that shows this field ("" = always shown).
    pub visible_when_name: String,
    pub visible_when_value: String,
    /// Shown to readers without JavaScript: "Used when Mode is s3."
    pub visible_when_note: String,
    /// What the input expects, when the control does not make it obvious.
    pub hint: String,
    pub error: String,
}

pub struct OptionView {
    pub value: String,
    pub label: String,
    pub description: String,
    pub selected: bool,
    pub disabled: bool,
}

/// Builds the view of one form. `saved` holds the saved values; `errors` maps input names
/// to messages.
pub fn form_view(
    which: Which,
    descriptor: &pb::JobTypeDescriptor,
    saved: &HashMap<String, pb::ConfigValue>,
    source: Source<'_>,
    errors: &HashMap<String, Vec<String>>,
) -> Option<FormView> {
    let form = which.form(descriptor)?;
    let prefix = which.prefix();
    let labels: HashMap<&str, &str> = distinct_fields(Some(form))
        .into_iter()
        .map(|f| (f.name.as_str(), if f.label.is_empty() { f.name.as_str() } else { f.label.as_str() }))
        .collect();
    let mut seen = HashSet::new();
    let mut index = 0usize;
    let sections = form
        .sections
        .iter()
        .map(|s| SectionView {
            title: s.title.clone(),
            description: s.description.clone(),
            fields: s
                .fields
                .iter()
                .filter(|f| seen.insert(f.name.as_str()))
                .map(|f| {
                    index += 1;
                    let current = present(saved, &f.name).or_else(|| which.defaults(descriptor).get(&f.name));
                    field_view(f, prefix, index, current, source, errors, &labels)
                })
                .collect(),
        })
        .filter(|s| !s.fields.is_empty())
        .collect();
    Some(FormView { title: form.title.clone(), description: form.description.clone(), sections })
}

fn field_view(
    f: &pb::ConfigField,
    prefix: &str,
    index: usize,
    current: Option<&pb::ConfigValue>,
    source: Source<'_>,
    errors: &HashMap<String, Vec<String>>,
    labels: &HashMap<&str, &str>,
) -> FieldView {
    let name = format!("{prefix}.{}", f.name);
    // A map field is edited as rows where rows show it exactly, and as what was posted when
    // the page comes back with errors.
    let control = match (control_of(f), source) {
        ("json", Source::Posted(p)) if kv::posted_rows(p, &name).is_some() => "kv",
        ("json", Source::Posted(p)) if p.has(&name) => "json",
        ("json", _) if kv::fits(f, current) => "kv",
        (control, _) => control,
    };
    let field_type = f.field_type();
    let mut v = FieldView {
        id: format!("f-{prefix}-{index}"),
        label: if f.label.is_empty() { f.name.clone() } else { f.label.clone() },
        description: f.description.clone(),
        help: f.help_text.clone(),
        placeholder: f.placeholder.clone(),
        control,
        required: f.required,
        read_only: f.read_only,
        sensitive: f.sensitive,
        value: String::new(),
        checked: false,
        options: Vec::new(),
        unit: "s",
        units: Vec::new(),
        rows: Vec::new(),
        min: String::new(),
        max: String::new(),
        step: if field_type == Type::Double { "any" } else { "1" },
        has_saved_secret: f.sensitive && current.is_some(),
        retype_secret: false,
        visible_when_name: String::new(),
        visible_when_value: String::new(),
        visible_when_note: String::new(),
        hint: String::new(),
        error: errors.get(&name).map(|m| sentence(&m.join("; "))).unwrap_or_default(),
        name,
    };

    // What the inputs show: the saved value, or what was posted (read-only and sensitive
    // fields are never taken from a post: the former is not posted, the latter is not
    // echoed).
    let mut selected: Vec<String> = Vec::new();
    match source {
        Source::Posted(posted) if !f.read_only && !f.sensitive => match control {
            "checkbox" => v.checked = posted.all(&v.name).any(|x| x == "true"),
            "select" => selected.extend(posted.first(&v.name).map(str::to_string)),
            "checkboxes" => selected.extend(posted.all(&v.name).filter(|x| !x.is_empty()).map(str::to_string)),
            "duration" => {
                v.value = posted.first(&v.name).unwrap_or_default().to_string();
                v.unit = unit_named(posted.first(&format!("unit:{}", v.name)).unwrap_or("s")).0;
            }
            _ => v.value = posted.first(&v.name).unwrap_or_default().to_string(),
        },
        Source::Posted(posted) if f.sensitive => {
            v.retype_secret = posted.first(&v.name).is_some_and(|x| !x.is_empty());
        }
        _ if f.sensitive => {}
        _ => {
            if let Some(kind) = current.and_then(|c| c.kind.as_ref()) {
                match control {
                    "checkbox" => v.checked = matches!(kind, Kind::BoolValue(true)),
                    "select" => selected.extend(value_key(kind)),
                    "checkboxes" => selected.extend(list_items(kind)),
                    "duration" => {
                        if let Kind::DurationValue(d) = kind {
                            let (amount, unit) = duration_display(d);
                            v.value = amount;
                            v.unit = unit;
                        } else {
                            v.value = value_key(kind).unwrap_or_default();
                        }
                    }
                    "lines" => v.value = list_items(kind).join("\n"),
                    "json" => v.value = json_text(kind),
                    "base64" => {
                        if let Kind::BytesValue(b) = kind {
                            v.value = base64::engine::general_purpose::STANDARD.encode(b);
                        }
                    }
                    _ => v.value = value_key(kind).unwrap_or_else(|| json_text(kind)),
                }
            }
        }
    }

    if matches!(control, "select" | "checkboxes") {
        v.options = options_of(f, &selected, control == "select");
    }
    if control == "duration" {
        v.units = unit_choices(DURATION_CHOICES, v.unit);
    }
    if control == "kv" {
        let posted = match source {
            Source::Posted(p) if !f.read_only => Some((p, v.name.as_str())),
            _ => None,
        };
        v.rows = kv::rows(f, current, posted);
        if let Source::Posted(p) = source
            && f.sensitive
        {
            v.retype_secret = p.all(&format!("value:{}", v.name)).any(|x| !x.is_empty());
        }
    }
    if control == "number" {
        v.min = f.min_value.as_ref().and_then(|b| b.kind.as_ref()).and_then(value_key).unwrap_or_default();
        v.max = f.max_value.as_ref().and_then(|b| b.kind.as_ref()).and_then(value_key).unwrap_or_default();
    }
    if let Some(expected) = f.visible_when_equals.as_ref().and_then(|e| e.kind.as_ref())
        && !f.visible_when_field.is_empty()
    {
        let key = value_key(expected).unwrap_or_default();
        let controller = labels.get(f.visible_when_field.as_str()).copied().unwrap_or(&f.visible_when_field);
        v.visible_when_note = format!("Used only when “{controller}” is {}.", shown_key(&key));
        v.visible_when_name = format!("{prefix}.{}", f.visible_when_field);
        v.visible_when_value = key;
    }
    v.hint = hint(f, control, field_type, &v);
    v
}

fn shown_key(key: &str) -> String {
    match key {
        "true" => "on".into(),
        "false" => "off".into(),
        other => format!("“{other}”"),
    }
}

fn hint(f: &pb::ConfigField, control: &str, field_type: Type, v: &FieldView) -> String {
    let range = range_hint(f);
    match control {
        "password" if v.has_saved_secret => {
            "A value is saved and is never shown. Leave this blank to keep it, or type a new one.".into()
        }
        "password" if f.sensitive => "Stored as a secret: once saved, it is never shown again.".into(),
        "password" | "text" if field_type == Type::Duration => "A duration such as 30s, 5m, 2h or 1d.".into(),
        "number" | "duration" => range,
        "lines" => {
            let items = match list_item_kind(f, None) {
                ItemKind::Int => " (whole numbers)",
                ItemKind::Double => " (numbers)",
                ItemKind::Bool => " (true or false)",
                ItemKind::String => "",
            };
            format!("One item per line{items}.")
        }
        "json" => "A JSON object, for example {\"key\": \"value\"}.".into(),
        "kv" if f.read_only => String::new(),
        "kv" if f.sensitive => "Saved values are never shown: leave a value blank to keep it, type one to replace it, \
                                or tick Remove to delete the name. Add a name with its value in an empty row."
            .into(),
        "kv" => "One name and its value per row; clear both to remove an entry.".into(),
        "base64" => "Bytes, base64-encoded.".into(),
        _ => String::new(),
    }
}

fn range_hint(f: &pb::ConfigField) -> String {
    let duration = f.field_type() == Type::Duration;
    let bound = |b: &Option<pb::ConfigValue>| {
        b.as_ref().and_then(|b| b.kind.as_ref()).and_then(|k| if duration { duration_bound(k) } else { value_key(k) })
    };
    match (bound(&f.min_value), bound(&f.max_value)) {
        (Some(lo), Some(hi)) => format!("From {lo} to {hi}."),
        (Some(lo), None) => format!("At least {lo}."),
        (None, Some(hi)) => format!("At most {hi}."),
        (None, None) => String::new(),
    }
}

/// A duration field's bound in words, in the largest unit that shows it exactly: "1
/// second", "1 day" (a number bound is in seconds, as the validator reads it).
fn duration_bound(kind: &Kind) -> Option<String> {
    let nanos = match kind {
        Kind::DurationValue(d) => duration_nanos(d),
        Kind::Int64Value(s) => i128::from(*s) * NANOS_PER_SECOND,
        Kind::DoubleValue(s) if s.is_finite() => (s * NANOS_PER_SECOND as f64) as i128,
        _ => return None,
    };
    let (amount, unit) = duration_display_in(nanos, DURATION_CHOICES);
    Some(in_words(&amount, unit))
}

fn options_of(f: &pb::ConfigField, selected: &[String], single: bool) -> Vec<OptionView> {
    let mut options: Vec<OptionView> = if f.options.is_empty() && f.field_type() == Type::Bool {
        [("true", "Yes"), ("false", "No")]
            .iter()
            .map(|(value, label)| OptionView {
                value: value.to_string(),
                label: label.to_string(),
                description: String::new(),
                selected: selected.iter().any(|s| s == value),
                disabled: false,
            })
            .collect()
    } else {
        f.options
            .iter()
            .map(|o| OptionView {
                value: o.value.clone(),
                label: if o.label.is_empty() { o.value.clone() } else { o.label.clone() },
                description: o.description.clone(),
                selected: selected.contains(&o.value),
                disabled: o.disabled,
            })
            .collect()
    };
    // A value the descriptor no longer offers stays visible instead of silently
    // switching to another option.
    for s in selected {
        if !s.is_empty() && !options.iter().any(|o| o.value == *s) {
            options.push(OptionView {
                value: s.clone(),
                label: format!("{s} (no longer offered)"),
                description: String::new(),
                selected: true,
                disabled: false,
            });
        }
    }
    if single && (!f.required || selected.iter().all(|s| s.is_empty())) {
        let label = if f.required { "— choose —" } else { "— none —" };
        options.insert(
            0,
            OptionView {
                value: String::new(),
                label: label.into(),
                description: String::new(),
                selected: selected.iter().all(|s| s.is_empty()),
                disabled: false,
            },
        );
    }
    options
}

// ---- values as text -----------------------------------------------------------------

/// The items of a list as the text the form shows (items without a key are left out); a
/// scalar as a list of one.
fn list_items(kind: &Kind) -> Vec<String> {
    match list_keys(kind) {
        Some(items) => items.into_iter().flatten().collect(),
        None => value_key(kind).into_iter().collect(),
    }
}

/// Any value as plain JSON (not proto JSON): what an operator expects to read and type.
pub fn to_json(kind: &Kind) -> serde_json::Value {
    use serde_json::Value as J;
    match kind {
        Kind::BoolValue(b) => J::Bool(*b),
        Kind::Int64Value(i) => J::from(*i),
        Kind::DoubleValue(d) => serde_json::Number::from_f64(*d).map(J::Number).unwrap_or(J::Null),
        Kind::StringValue(s) => J::String(s.clone()),
        Kind::BytesValue(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Kind::DurationValue(d) => J::String(duration_text(d)),
        Kind::StringList(l) => J::from(l.values.clone()),
        Kind::Int64List(l) => J::from(l.values.clone()),
        Kind::DoubleList(l) => J::Array(
            l.values.iter().map(|d| serde_json::Number::from_f64(*d).map(J::Number).unwrap_or(J::Null)).collect(),
        ),
        Kind::BoolList(l) => J::from(l.values.clone()),
        Kind::ListValue(l) => {
            J::Array(l.values.iter().map(|v| v.kind.as_ref().map(to_json).unwrap_or(J::Null)).collect())
        }
        Kind::MapValue(m) => J::Object(
            m.fields.iter().map(|(k, v)| (k.clone(), v.kind.as_ref().map(to_json).unwrap_or(J::Null))).collect(),
        ),
    }
}

fn json_text(kind: &Kind) -> String {
    serde_json::to_string_pretty(&to_json(kind)).unwrap_or_default()
}

/// A value for display in a table cell (job parameters, results).
pub fn display(v: &pb::ConfigValue) -> String {
    match &v.kind {
        None => "—".into(),
        Some(Kind::StringValue(s)) => s.clone(),
        Some(k @ (Kind::ListValue(_) | Kind::MapValue(_))) => serde_json::to_string(&to_json(k)).unwrap_or_default(),
        Some(k) => value_key(k).unwrap_or_else(|| serde_json::to_string(&to_json(k)).unwrap_or_default()),
    }
}
