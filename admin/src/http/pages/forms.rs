//! Descriptor forms as HTML and back: turns a [`pb::ConfigForm`] plus values into field
//! views for the templates, and a posted HTML form into [`pb::ConfigValue`]s for the
//! validator and the config store.
//!
//! How each field is shown (the "control"), by field type and widget:
//!
//! | field                        | control | posted as |
//! |------------------------------|---------|-----------|
//! | sensitive (any type)         | password, never filled in | blank = unchanged; the "clear" box saves an empty value |
//! | BOOL                         | checkbox (a SELECT widget: select) | a hidden `false` plus the box's `true` |
//! | INT64, DOUBLE                | number with min/max/step, or select when it has options | text |
//! | STRING, UNSPECIFIED          | text; textarea, password or select by widget | text |
//! | ENUM                         | select (text when it lists no options) | text |
//! | DURATION                     | number plus a unit select | `name` and `unit:name` |
//! | LIST                         | checkboxes when it has options, else one item per line | repeated `name` / text |
//! | OBJECT                       | JSON textarea | text |
//! | BYTES                        | base64 textarea | text |
//!
//! Input names are `admin.<field>` and `worker.<field>`, the same names the validator
//! reports errors under, so each error lands next to its field. Read-only fields are
//! shown disabled and not posted (the config store keeps their saved value).
//!
//! Parsing only turns text into typed values; every rule (required, ranges, options,
//! patterns, visibility) is the validator's, so the pages accept exactly what the API
//! accepts. A field that cannot even be parsed ("abc" for an integer) gets its error here,
//! unless it is hidden by its `visible_when_*` rule, in which case it is ignored like
//! the validator ignores hidden fields.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use proto::pb::{self, ConfigFieldType as Type, ConfigWidget as Widget, config_value::Kind};

use super::sentence;
use crate::{
    runtime_config::{RUNTIME_SETTINGS, SettingKind, Zero},
    validator::FieldError,
};

/// A posted form: every (name, value) pair in order (names repeat for multi-selects).
#[derive(Clone, Copy)]
pub struct Posted<'a>(pub &'a [(String, String)]);

impl<'a> Posted<'a> {
    pub fn all(self, name: &str) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn first(self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn has(self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

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
    /// checkbox, select, checkboxes, text, textarea, number, duration, password, lines, json, base64
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

/// Where the inputs' contents come from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Saved values (defaults already filled in): the page as first shown.
    Saved,
    /// What the operator posted: the page shown again with errors.
    Posted(Posted<'a>),
}

/// Which form of a descriptor, with its input-name prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Admin,
    Worker,
}

impl Which {
    pub fn prefix(self) -> &'static str {
        match self {
            Which::Admin => "admin",
            Which::Worker => "worker",
        }
    }

    pub fn form(self, d: &pb::JobTypeDescriptor) -> Option<&pb::ConfigForm> {
        match self {
            Which::Admin => d.admin_config_form.as_ref(),
            Which::Worker => d.worker_config_form.as_ref(),
        }
    }

    pub fn saved(self, c: &pb::PersistedJobTypeConfig) -> &HashMap<String, pb::ConfigValue> {
        match self {
            Which::Admin => &c.admin_config_values,
            Which::Worker => &c.worker_config_values,
        }
    }

    /// The field's default: for the worker form the descriptor's `worker_default_values`
    /// first, then the form's own defaults (the validator's order).
    fn default<'d>(self, d: &'d pb::JobTypeDescriptor, name: &str) -> Option<&'d pb::ConfigValue> {
        let extra = match self {
            Which::Admin => None,
            Which::Worker => present(&d.worker_default_values, name),
        };
        extra.or_else(|| self.form(d).and_then(|f| present(&f.default_values, name)))
    }
}

fn present<'a>(map: &'a HashMap<String, pb::ConfigValue>, name: &str) -> Option<&'a pb::ConfigValue> {
    map.get(name).filter(|v| v.kind.is_some())
}

/// Every distinct field of a form, in declaration order (the first of a repeated name wins,
/// as in the validator).
fn fields(form: Option<&pb::ConfigForm>) -> Vec<&pb::ConfigField> {
    let mut seen = HashSet::new();
    form.into_iter()
        .flat_map(|f| f.sections.iter())
        .flat_map(|s| s.fields.iter())
        .filter(|f| seen.insert(f.name.as_str()))
        .collect()
}

/// The control that shows a field (see the module docs).
fn control_of(f: &pb::ConfigField) -> &'static str {
    if f.sensitive {
        return "password";
    }
    let has_options = !f.options.is_empty();
    match (f.field_type(), f.widget()) {
        (Type::Bool, Widget::Select) => "select",
        (Type::Bool, _) => "checkbox",
        (Type::Int64 | Type::Double, _) if has_options => "select",
        (Type::Int64 | Type::Double, _) => "number",
        (Type::String | Type::Unspecified, Widget::Select | Widget::Unspecified) if has_options => "select",
        (Type::String | Type::Unspecified, Widget::Textarea) => "textarea",
        (Type::String | Type::Unspecified, Widget::Password) => "password",
        (Type::String | Type::Unspecified, _) => "text",
        (Type::Enum, _) if has_options => "select",
        (Type::Enum, _) => "text",
        (Type::Duration, _) => "duration",
        (Type::List, _) if has_options => "checkboxes",
        (Type::List, _) => "lines",
        (Type::Object, _) => "json",
        (Type::Bytes, _) => "base64",
    }
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
    let labels: HashMap<&str, &str> = fields(Some(form))
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
                    let current = present(saved, &f.name).or_else(|| which.default(descriptor, &f.name));
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
    let control = control_of(f);
    let name = format!("{prefix}.{}", f.name);
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
        "base64" => "Bytes, base64-encoded.".into(),
        _ => String::new(),
    }
}

fn range_hint(f: &pb::ConfigField) -> String {
    let bound = |b: &Option<pb::ConfigValue>| b.as_ref().and_then(|b| b.kind.as_ref()).and_then(bound_text);
    let unit = if f.field_type() == Type::Duration { " s" } else { "" };
    match (bound(&f.min_value), bound(&f.max_value)) {
        (Some(lo), Some(hi)) => format!("From {lo}{unit} to {hi}{unit}."),
        (Some(lo), None) => format!("At least {lo}{unit}."),
        (None, Some(hi)) => format!("At most {hi}{unit}."),
        (None, None) => String::new(),
    }
}

fn bound_text(kind: &Kind) -> Option<String> {
    match kind {
        Kind::DurationValue(d) => Some(duration_seconds_text(d)),
        other => value_key(other),
    }
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

// ---- parsing ------------------------------------------------------------------------

/// Turns the posted inputs of one form into values. Absent inputs (a read-only field, a
/// blank sensitive field, an empty number) give no value; the config store then keeps
/// what it must (sensitive and read-only fields) and the validator rejects what is
/// required. Errors are for input that has no meaning for the field's type.
pub fn parse_form(
    which: Which,
    descriptor: &pb::JobTypeDescriptor,
    saved: &HashMap<String, pb::ConfigValue>,
    posted: Posted<'_>,
) -> (HashMap<String, pb::ConfigValue>, Vec<FieldError>) {
    let prefix = which.prefix();
    let list = fields(which.form(descriptor));
    let mut values = HashMap::new();
    let mut failed: Vec<(&pb::ConfigField, String)> = Vec::new();
    for f in &list {
        if f.read_only {
            continue;
        }
        let name = format!("{prefix}.{}", f.name);
        let hint_value = present(saved, &f.name).or_else(|| which.default(descriptor, &f.name));
        match parse_field(f, &name, hint_value, posted) {
            Ok(Some(kind)) => {
                values.insert(f.name.clone(), pb::ConfigValue { kind: Some(kind) });
            }
            Ok(None) => {}
            Err(message) => failed.push((f, message)),
        }
    }
    // A hidden field is not validated, so input it cannot parse is ignored too.
    let errors = failed
        .into_iter()
        .filter(|(f, _)| is_visible(f, &values, |n| which.default(descriptor, n)))
        .map(|(f, message)| FieldError::new(format!("{prefix}.{}", f.name), message))
        .collect();
    (values, errors)
}

fn is_visible<'a>(
    f: &pb::ConfigField,
    values: &'a HashMap<String, pb::ConfigValue>,
    default_of: impl Fn(&str) -> Option<&'a pb::ConfigValue>,
) -> bool {
    let Some(expected) = f.visible_when_equals.as_ref().and_then(|e| e.kind.as_ref()) else {
        return true;
    };
    if f.visible_when_field.is_empty() {
        return true;
    }
    let actual = present(values, &f.visible_when_field).or_else(|| default_of(&f.visible_when_field));
    actual.and_then(|a| a.kind.as_ref()).and_then(value_key).is_some_and(|a| Some(a) == value_key(expected))
}

fn parse_field(
    f: &pb::ConfigField,
    name: &str,
    current: Option<&pb::ConfigValue>,
    posted: Posted<'_>,
) -> Result<Option<Kind>, String> {
    let field_type = f.field_type();
    match control_of(f) {
        "checkbox" => {
            let mut seen = posted.all(name).peekable();
            if seen.peek().is_none() {
                return Ok(None);
            }
            Ok(Some(Kind::BoolValue(seen.any(|x| x == "true"))))
        }
        "checkboxes" => {
            if !posted.has(name) {
                return Ok(None);
            }
            let items: Vec<&str> = posted.all(name).filter(|x| !x.is_empty()).collect();
            typed_list(list_item_kind(f, current), &items).map(Some)
        }
        // A password widget on a field that is not sensitive shows its value like a text
        // input does, so blank means blank there.
        "password" if !f.sensitive => match posted.first(name) {
            None => Ok(None),
            Some(text) if text.is_empty() && field_type != Type::String && field_type != Type::Unspecified => Ok(None),
            Some(text) => parse_text(f, field_type, text, current).map(Some),
        },
        "password" => {
            let text = posted.first(name).unwrap_or_default();
            if text.is_empty() {
                if posted.has(&format!("clear:{name}")) {
                    return Ok(match field_type {
                        Type::Bytes => Some(Kind::BytesValue(Vec::new())),
                        Type::String | Type::Unspecified | Type::Enum => Some(Kind::StringValue(String::new())),
                        _ => None,
                    });
                }
                return Ok(None);
            }
            parse_text(f, field_type, text, current).map(Some)
        }
        "duration" => {
            let amount = posted.first(name).unwrap_or_default().trim();
            if amount.is_empty() {
                return Ok(None);
            }
            let (unit, nanos_per) = unit_named(posted.first(&format!("unit:{name}")).unwrap_or("s"));
            let n: f64 = amount
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| format!("must be a number of {}", unit_words(unit)))?;
            duration_from_nanos(n * nanos_per as f64).map(|d| Some(Kind::DurationValue(d)))
        }
        "select" | "number" | "json" | "base64" | "lines" | "text" | "textarea" => {
            let Some(text) = posted.first(name) else {
                return Ok(None);
            };
            let control = control_of(f);
            if text.trim().is_empty()
                && (matches!(control, "select" | "number" | "json" | "base64")
                    || !matches!(field_type, Type::String | Type::Unspecified | Type::List))
            {
                return Ok(None);
            }
            if control == "lines" {
                let items: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                return typed_list(list_item_kind(f, current), &items).map(Some);
            }
            parse_text(f, field_type, text, current).map(Some)
        }
        _ => Ok(None),
    }
}

/// A single text input's value as the field's type.
fn parse_text(
    f: &pb::ConfigField,
    field_type: Type,
    text: &str,
    current: Option<&pb::ConfigValue>,
) -> Result<Kind, String> {
    let t = text.trim();
    match field_type {
        Type::Bool => parse_bool(t).map(Kind::BoolValue).ok_or_else(|| "must be true or false".to_string()),
        Type::Int64 => t.parse().map(Kind::Int64Value).map_err(|_| "must be a whole number".to_string()),
        Type::Double => t
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .map(Kind::DoubleValue)
            .ok_or_else(|| "must be a number".to_string()),
        Type::Duration => parse_duration_text(t)
            .ok_or_else(|| "must be a duration such as 30s, 5m, 2h or 1d".to_string())
            .and_then(duration_from_nanos)
            .map(Kind::DurationValue),
        Type::Bytes => {
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
                .map(Kind::BytesValue)
                .map_err(|_| "must be base64 (letters, digits, + and /, padded with =)".to_string())
        }
        Type::Object => {
            let json: serde_json::Value =
                serde_json::from_str(t).map_err(|e| format!("must be a JSON object ({e})"))?;
            match json {
                serde_json::Value::Object(map) => Ok(Kind::MapValue(json_map(map))),
                _ => Err("must be a JSON object, in braces".to_string()),
            }
        }
        Type::List => {
            // A sensitive list is a single password input: items separated by commas.
            let items: Vec<&str> = t.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            typed_list(list_item_kind(f, current), &items)
        }
        Type::String | Type::Unspecified | Type::Enum => Ok(Kind::StringValue(text.to_string())),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ItemKind {
    String,
    Int,
    Double,
    Bool,
}

/// A LIST field says nothing about its items' type, so the saved value (else the
/// default) decides; a list with options holds their string values.
fn list_item_kind(f: &pb::ConfigField, current: Option<&pb::ConfigValue>) -> ItemKind {
    if !f.options.is_empty() {
        return ItemKind::String;
    }
    match current.and_then(|c| c.kind.as_ref()) {
        Some(Kind::Int64List(_)) => ItemKind::Int,
        Some(Kind::DoubleList(_)) => ItemKind::Double,
        Some(Kind::BoolList(_)) => ItemKind::Bool,
        _ => ItemKind::String,
    }
}

fn typed_list(kind: ItemKind, items: &[&str]) -> Result<Kind, String> {
    let bad = |i: usize, what: &str| format!("item {} must be {what}", i + 1);
    Ok(match kind {
        ItemKind::String => Kind::StringList(pb::StringList { values: items.iter().map(|s| s.to_string()).collect() }),
        ItemKind::Int => Kind::Int64List(pb::Int64List {
            values: items
                .iter()
                .enumerate()
                .map(|(i, s)| s.parse().map_err(|_| bad(i, "a whole number")))
                .collect::<Result<_, _>>()?,
        }),
        ItemKind::Double => Kind::DoubleList(pb::DoubleList {
            values: items
                .iter()
                .enumerate()
                .map(|(i, s)| s.parse::<f64>().ok().filter(|d| d.is_finite()).ok_or_else(|| bad(i, "a number")))
                .collect::<Result<_, _>>()?,
        }),
        ItemKind::Bool => Kind::BoolList(pb::BoolList {
            values: items
                .iter()
                .enumerate()
                .map(|(i, s)| parse_bool(s).ok_or_else(|| bad(i, "true or false")))
                .collect::<Result<_, _>>()?,
        }),
    })
}

// ---- durations ----------------------------------------------------------------------

const UNITS: &[(&str, i128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("min", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

fn unit_named(name: &str) -> (&'static str, i128) {
    UNITS.iter().find(|(n, _)| *n == name).copied().unwrap_or(("s", 1_000_000_000))
}

fn unit_words(unit: &str) -> &'static str {
    match unit {
        "ms" => "milliseconds",
        "min" => "minutes",
        "h" => "hours",
        "d" => "days",
        _ => "seconds",
    }
}

fn nanos_of(d: &pb::Duration) -> i128 {
    i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos)
}

/// The amount and the largest unit that shows a duration exactly.
fn duration_display(d: &pb::Duration) -> (String, &'static str) {
    let nanos = nanos_of(d);
    if nanos == 0 {
        return ("0".into(), "s");
    }
    for (unit, per) in UNITS {
        if nanos % per == 0 {
            return ((nanos / per).to_string(), unit);
        }
    }
    (format!("{}", nanos as f64 / 1e9), "s")
}

fn duration_seconds_text(d: &pb::Duration) -> String {
    let nanos = nanos_of(d);
    if nanos % 1_000_000_000 == 0 { (nanos / 1_000_000_000).to_string() } else { format!("{}", nanos as f64 / 1e9) }
}

/// "250ms", "30s", "5m", "5min", "2h", "1d" or a bare number of seconds, in nanoseconds.
fn parse_duration_text(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.trim().parse().ok().filter(|n: &f64| n.is_finite())?;
    let per = match unit.trim() {
        "" | "s" | "sec" => 1e9,
        "ms" => 1e6,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "d" => 86_400e9,
        _ => return None,
    };
    Some(n * per)
}

fn duration_from_nanos(nanos: f64) -> Result<pb::Duration, String> {
    // protobuf's limit: about 10,000 years either way.
    const MAX_SECONDS: f64 = 315_576_000_000.0;
    let nanos = nanos.round();
    if !nanos.is_finite() || (nanos / 1e9).abs() > MAX_SECONDS {
        return Err("is too long a duration".into());
    }
    let n = nanos as i128;
    Ok(pb::Duration { seconds: (n / 1_000_000_000) as i64, nanos: (n % 1_000_000_000) as i32 })
}

fn duration_text(d: &pb::Duration) -> String {
    format!("{}s", duration_seconds_text(d))
}

// ---- values as text -----------------------------------------------------------------

/// A scalar as the string an option's value would hold (as the validator compares them).
pub fn value_key(kind: &Kind) -> Option<String> {
    match kind {
        Kind::BoolValue(b) => Some(b.to_string()),
        Kind::Int64Value(i) => Some(i.to_string()),
        Kind::DoubleValue(d) => Some(d.to_string()),
        Kind::StringValue(s) => Some(s.clone()),
        Kind::DurationValue(d) => Some(duration_text(d)),
        _ => None,
    }
}

fn list_items(kind: &Kind) -> Vec<String> {
    match kind {
        Kind::StringList(l) => l.values.clone(),
        Kind::Int64List(l) => l.values.iter().map(|v| v.to_string()).collect(),
        Kind::DoubleList(l) => l.values.iter().map(|v| v.to_string()).collect(),
        Kind::BoolList(l) => l.values.iter().map(|v| v.to_string()).collect(),
        Kind::ListValue(l) => l.values.iter().filter_map(|v| v.kind.as_ref().and_then(value_key)).collect(),
        other => value_key(other).into_iter().collect(),
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

fn from_json(json: serde_json::Value) -> Option<Kind> {
    use serde_json::Value as J;
    Some(match json {
        J::Null => return None,
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Kind::Int64Value(i),
            None => Kind::DoubleValue(n.as_f64()?),
        },
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(pb::ValueList {
            values: items.into_iter().map(|j| pb::ConfigValue { kind: from_json(j) }).collect(),
        }),
        J::Object(map) => Kind::MapValue(json_map(map)),
    })
}

fn json_map(map: serde_json::Map<String, serde_json::Value>) -> pb::ValueMap {
    pb::ValueMap {
        fields: map
            .into_iter()
            .filter_map(|(k, v)| from_json(v).map(|kind| (k, pb::ConfigValue { kind: Some(kind) })))
            .collect(),
    }
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

// ---- errors -------------------------------------------------------------------------

/// Errors by input name, and the ones no field on the page can show.
pub fn split_errors(errors: &[FieldError], known: &HashSet<String>) -> (HashMap<String, Vec<String>>, Vec<String>) {
    let mut by_field: HashMap<String, Vec<String>> = HashMap::new();
    let mut general = Vec::new();
    for e in errors {
        if known.contains(&e.field) {
            let list = by_field.entry(e.field.clone()).or_default();
            if !list.contains(&e.message) {
                list.push(e.message.clone());
            }
        } else {
            general.push(sentence(&e.to_string()));
        }
    }
    (by_field, general)
}

/// The input names of a descriptor's editable fields and of the runtime form.
pub fn input_names(d: &pb::JobTypeDescriptor) -> HashSet<String> {
    let mut names = HashSet::new();
    for which in [Which::Admin, Which::Worker] {
        for f in fields(which.form(d)) {
            names.insert(format!("{}.{}", which.prefix(), f.name));
        }
    }
    for s in RUNTIME_SETTINGS {
        names.insert(format!("runtime.{}", s.name));
    }
    names
}

// ---- the runtime settings form ------------------------------------------------------

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
    use crate::runtime_config;

    fn field(name: &str, t: Type, w: Widget) -> pb::ConfigField {
        pb::ConfigField {
            name: name.into(),
            label: name.into(),
            field_type: t as i32,
            widget: w as i32,
            ..Default::default()
        }
    }

    fn descriptor(fields: Vec<pb::ConfigField>) -> pb::JobTypeDescriptor {
        pb::JobTypeDescriptor {
            job_type: "t".into(),
            admin_config_form: Some(pb::ConfigForm {
                form_id: "admin".into(),
                sections: vec![pb::ConfigSection { section_id: "s".into(), fields, ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn post(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn kind(v: &HashMap<String, pb::ConfigValue>, name: &str) -> Option<Kind> {
        v.get(name).and_then(|v| v.kind.clone())
    }

    #[test]
    fn every_field_type_parses_from_its_control() {
        let d = descriptor(vec![
            field("flag", Type::Bool, Widget::Toggle),
            field("count", Type::Int64, Widget::Number),
            field("ratio", Type::Double, Widget::Number),
            field("name", Type::String, Widget::Text),
            field("wait", Type::Duration, Widget::Duration),
            field("tags", Type::List, Widget::Unspecified),
            field("extra", Type::Object, Widget::Unspecified),
            field("blob", Type::Bytes, Widget::Unspecified),
        ]);
        let p = post(&[
            ("admin.flag", "false"),
            ("admin.flag", "true"),
            ("admin.count", " 42 "),
            ("admin.ratio", "0.25"),
            ("admin.name", "hello"),
            ("admin.wait", "5"),
            ("unit:admin.wait", "min"),
            ("admin.tags", "a\n\n b \nc"),
            ("admin.extra", r#"{"k": [1, "x"], "n": null}"#),
            ("admin.blob", "aGk="),
        ]);
        let (v, errors) = parse_form(Which::Admin, &d, &HashMap::new(), Posted(&p));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(kind(&v, "flag"), Some(Kind::BoolValue(true)));
        assert_eq!(kind(&v, "count"), Some(Kind::Int64Value(42)));
        assert_eq!(kind(&v, "ratio"), Some(Kind::DoubleValue(0.25)));
        assert_eq!(kind(&v, "name"), Some(Kind::StringValue("hello".into())));
        assert_eq!(kind(&v, "wait"), Some(Kind::DurationValue(pb::Duration { seconds: 300, nanos: 0 })));
        assert_eq!(
            kind(&v, "tags"),
            Some(Kind::StringList(pb::StringList { values: vec!["a".into(), "b".into(), "c".into()] }))
        );
        let Some(Kind::MapValue(m)) = kind(&v, "extra") else { panic!("object") };
        assert_eq!(m.fields.len(), 1, "null members are dropped");
        assert_eq!(kind(&v, "blob"), Some(Kind::BytesValue(b"hi".to_vec())));
    }

    #[test]
    fn unparsable_input_is_an_error_on_its_field_unless_the_field_is_hidden() {
        let mut hidden = field("hidden_count", Type::Int64, Widget::Number);
        hidden.visible_when_field = "mode".into();
        hidden.visible_when_equals = Some(pb::ConfigValue { kind: Some(Kind::StringValue("on".into())) });
        let d = descriptor(vec![
            field("mode", Type::String, Widget::Text),
            field("count", Type::Int64, Widget::Number),
            hidden,
            field("extra", Type::Object, Widget::Unspecified),
        ]);
        let p = post(&[
            ("admin.mode", "off"),
            ("admin.count", "abc"),
            ("admin.hidden_count", "xyz"),
            ("admin.extra", "[1]"),
        ]);
        let (_, errors) = parse_form(Which::Admin, &d, &HashMap::new(), Posted(&p));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["admin.count", "admin.extra"]);
        assert_eq!(errors[0].message, "must be a whole number");
    }

    #[test]
    fn a_blank_sensitive_field_is_left_out_so_the_saved_value_stays() {
        let mut secret = field("token", Type::String, Widget::Password);
        secret.sensitive = true;
        let d = descriptor(vec![secret]);
        let saved: HashMap<String, pb::ConfigValue> =
            [("token".to_string(), pb::ConfigValue { kind: Some(Kind::StringValue("s3cr3t".into())) })].into();
        let p = post(&[("admin.token", "")]);
        let (v, _) = parse_form(Which::Admin, &d, &saved, Posted(&p));
        assert!(v.is_empty());
        let cleared = post(&[("admin.token", ""), ("clear:admin.token", "1")]);
        let (v, _) = parse_form(Which::Admin, &d, &saved, Posted(&cleared));
        assert_eq!(kind(&v, "token"), Some(Kind::StringValue(String::new())));

        let view = form_view(Which::Admin, &d, &saved, Source::Saved, &HashMap::new()).unwrap();
        let f = &view.sections[0].fields[0];
        assert_eq!(f.control, "password");
        assert!(f.value.is_empty() && f.has_saved_secret);
        let typed = post(&[("admin.token", "new-secret")]);
        let view = form_view(Which::Admin, &d, &saved, Source::Posted(Posted(&typed)), &HashMap::new()).unwrap();
        let f = &view.sections[0].fields[0];
        assert!(f.value.is_empty() && f.retype_secret, "a typed secret is not echoed back");
    }

    #[test]
    fn list_items_keep_the_type_of_the_saved_list() {
        let d = descriptor(vec![field("ports", Type::List, Widget::Unspecified)]);
        let saved: HashMap<String, pb::ConfigValue> =
            [("ports".to_string(), pb::ConfigValue { kind: Some(Kind::Int64List(pb::Int64List { values: vec![1] })) })]
                .into();
        let (v, errors) = parse_form(Which::Admin, &d, &saved, Posted(&post(&[("admin.ports", "80\n443")])));
        assert!(errors.is_empty());
        assert_eq!(kind(&v, "ports"), Some(Kind::Int64List(pb::Int64List { values: vec![80, 443] })));
        let (_, errors) = parse_form(Which::Admin, &d, &saved, Posted(&post(&[("admin.ports", "80\nhttp")])));
        assert_eq!(errors[0].message, "item 2 must be a whole number");
    }

    #[test]
    fn durations_show_in_the_largest_exact_unit() {
        assert_eq!(duration_display(&pb::Duration { seconds: 7200, nanos: 0 }), ("2".into(), "h"));
        assert_eq!(duration_display(&pb::Duration { seconds: 90, nanos: 0 }), ("90".into(), "s"));
        assert_eq!(duration_display(&pb::Duration { seconds: 0, nanos: 250_000_000 }), ("250".into(), "ms"));
        assert_eq!(parse_duration_text("5m"), Some(300e9));
        assert_eq!(parse_duration_text("1.5h"), Some(5400e9));
        assert_eq!(parse_duration_text("soon"), None);
    }

    #[test]
    fn runtime_settings_parse_and_report_non_numbers() {
        let p = post(&[
            ("runtime.enabled", "false"),
            ("runtime.enabled", "true"),
            ("runtime.retry_limit", "5"),
            ("runtime.retry_backoff_seconds", "soon"),
        ]);
        let (r, errors) = parse_runtime(Posted(&p));
        assert!(r.enabled);
        assert_eq!(r.retry_limit, 5);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "runtime.retry_backoff_seconds");
    }

    #[test]
    fn the_form_shows_every_setting_of_the_table_with_its_bounds_and_zero_rule() {
        let view = runtime_view(&runtime_config::fallback(), None, &HashMap::new());
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
        let current =
            pb::AdminRuntimeConfig { retry_limit: 0, detection_interval_minutes: 15, ..runtime_config::fallback() };
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
