//! Descriptor forms as HTML and back: turns a [`pb::ConfigForm`] plus values into field
//! views for the templates ([`render`]), a posted HTML form into [`pb::ConfigValue`]s for
//! the validator and the config store ([`parse`]), and the same for the runtime settings
//! ([`runtime`]).
//!
//! How each field is shown (the "control"), by field type and widget:
//!
//! | field                        | control | posted as |
//! |------------------------------|---------|-----------|
//! | sensitive (but OBJECT)       | password, never filled in | blank = unchanged; the "clear" box saves an empty value |
//! | BOOL                         | checkbox (a SELECT widget: select) | a hidden `false` plus the box's `true` |
//! | INT64, DOUBLE                | number with min/max/step, or select when it has options | text |
//! | STRING, UNSPECIFIED          | text; textarea, password or select by widget | text |
//! | ENUM                         | select (text when it lists no options) | text |
//! | DURATION                     | number plus a unit select | `name` and `unit:name` |
//! | LIST                         | checkboxes when it has options, else one item per line | repeated `name` / text |
//! | OBJECT of named strings      | key/value rows (sensitive OBJECT: always) | `key:name`, `value:name` per row, `remove:name` ([`kv`]) |
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
//! the validator ignores hidden fields. Visibility, value keys, durations and "keep
//! unchanged" are [`crate::config_value`]'s, shared with the validator.

mod kv;
mod parse;
mod render;
mod runtime;

#[cfg(test)]
mod agreement;
#[cfg(test)]
mod props;

use std::collections::{HashMap, HashSet};

use proto::pb::{self, ConfigFieldType as Type, ConfigWidget as Widget, config_value::Kind};

pub use parse::parse_form;
pub use render::{FormView, display, form_view};
pub use runtime::{RuntimeView, duration_in, parse_runtime, runtime_view};

use super::sentence;
use crate::{
    config_value::{Defaults, distinct_fields},
    runtime_config::RUNTIME_SETTINGS,
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

/// One unit of a duration input's select.
pub struct UnitChoice {
    pub value: &'static str,
    pub words: &'static str,
    pub selected: bool,
}

/// The select of a duration input offering `units`, with `shown` selected.
pub fn unit_choices(units: &[(&'static str, &'static str)], shown: &str) -> Vec<UnitChoice> {
    units.iter().map(|(value, words)| UnitChoice { value, words, selected: *value == shown }).collect()
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

    /// The form's defaults: for the worker form the descriptor's `worker_default_values`
    /// first, then the form's own (the validator's order).
    fn defaults(self, d: &pb::JobTypeDescriptor) -> Defaults<'_> {
        match self {
            Which::Admin => Defaults::admin(d),
            Which::Worker => Defaults::worker(d),
        }
    }
}

/// The control that shows a field (see the module docs).
fn control_of(f: &pb::ConfigField) -> &'static str {
    if f.sensitive {
        return if f.field_type() == Type::Object { "kv" } else { "password" };
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

/// The type of a LIST field's items.
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
        for f in distinct_fields(which.form(d)) {
            names.insert(format!("{}.{}", which.prefix(), f.name));
        }
    }
    for s in RUNTIME_SETTINGS {
        names.insert(format!("runtime.{}", s.name));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, t: Type, w: Widget) -> pb::ConfigField {
        pb::ConfigField {
            name: name.into(),
            label: name.into(),
            field_type: t as i32,
            widget: w as i32,
            ..Default::default()
        }
    }

    use crate::test_support::descriptor_with as descriptor;

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
    fn a_duration_fields_range_reads_in_words_and_its_unit_select_offers_every_unit() {
        let mut wait = field("wait", Type::Duration, Widget::Duration);
        wait.min_value =
            Some(pb::ConfigValue { kind: Some(Kind::DurationValue(pb::Duration { seconds: 1, nanos: 0 })) });
        wait.max_value = Some(pb::ConfigValue { kind: Some(Kind::Int64Value(86_400)) });
        let mut quick = field("quick", Type::Duration, Widget::Duration);
        quick.min_value =
            Some(pb::ConfigValue { kind: Some(Kind::DurationValue(pb::Duration { seconds: 0, nanos: 250_000_000 })) });
        let d = descriptor(vec![wait, quick]);
        let view = form_view(Which::Admin, &d, &HashMap::new(), Source::Saved, &HashMap::new()).unwrap();
        let (wait, quick) = (&view.sections[0].fields[0], &view.sections[0].fields[1]);
        assert_eq!(wait.hint, "From 1 second to 1 day.");
        assert_eq!(quick.hint, "At least 250 milliseconds.");
        let units: Vec<&str> = wait.units.iter().map(|u| u.value).collect();
        assert_eq!(units, ["ms", "s", "min", "h", "d"]);
        assert_eq!(wait.units.iter().filter(|u| u.selected).map(|u| u.value).collect::<Vec<_>>(), ["s"]);
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
}
