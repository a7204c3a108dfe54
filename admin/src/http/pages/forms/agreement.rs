//! Tests that the forms and the validator agree: for every field type and control, a
//! saved value rendered into the form and posted back as a browser would post it parses
//! to the same value, which the validator accepts; and on the same inputs, a field the
//! validator treats as hidden is ignored by the form parser, and a visible one is not.

use std::collections::HashMap;

use proto::pb::{self, ConfigFieldType as Type, ConfigWidget as Widget, config_value::Kind};

use super::{Posted, Source, Which, form_view, parse_form, render::FormView};
use crate::{
    config_value::keep_unchanged_config,
    test_support::{
        cv::{b, d, i, s, v},
        descriptor_with as descriptor,
    },
    validator::validate_config,
};

fn dur(seconds: i64, nanos: i32) -> pb::ConfigValue {
    v(Kind::DurationValue(pb::Duration { seconds, nanos }))
}
fn strs(xs: &[&str]) -> pb::ConfigValue {
    v(Kind::StringList(pb::StringList { values: xs.iter().map(|x| x.to_string()).collect() }))
}

fn field(name: &str, t: Type, w: Widget) -> pb::ConfigField {
    pb::ConfigField {
        name: name.into(),
        label: name.into(),
        field_type: t as i32,
        widget: w as i32,
        ..Default::default()
    }
}

fn options(values: &[&str]) -> Vec<pb::ConfigOption> {
    values
        .iter()
        .map(|x| pb::ConfigOption { value: x.to_string(), label: x.to_string(), ..Default::default() })
        .collect()
}

/// What a browser posts for the rendered form (see `templates/macros.html`): disabled
/// controls (read-only checkboxes and selects) are not posted, read-only text inputs are;
/// a sensitive input is blank; a checkbox posts a hidden `false` before its `true`; a
/// group of checkboxes posts a hidden empty value and then each ticked box; a select
/// posts its selected option, else its first enabled one.
fn browser_post(view: &FormView) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut push = |name: &str, value: &str| pairs.push((name.to_string(), value.to_string()));
    for f in view.sections.iter().flat_map(|s| s.fields.iter()) {
        let disabled = f.read_only && matches!(f.control, "checkbox" | "select" | "checkboxes");
        if disabled {
            continue;
        }
        match f.control {
            "checkbox" => {
                push(&f.name, "false");
                if f.checked {
                    push(&f.name, "true");
                }
            }
            "select" => {
                let chosen = f.options.iter().find(|o| o.selected).or_else(|| f.options.iter().find(|o| !o.disabled));
                push(&f.name, chosen.map(|o| o.value.as_str()).unwrap_or_default());
            }
            "checkboxes" => {
                push(&f.name, "");
                for o in f.options.iter().filter(|o| o.selected && !o.disabled) {
                    push(&f.name, &o.value);
                }
            }
            "duration" => {
                push(&f.name, &f.value);
                push(&format!("unit:{}", f.name), f.unit);
            }
            "password" if f.sensitive => push(&f.name, ""),
            // Every row posts its name and value (a secret's value blank); no Remove box
            // is ticked.
            "kv" => {
                for r in &f.rows {
                    push(&format!("key:{}", f.name), &r.key);
                    push(&format!("value:{}", f.name), &r.value);
                }
            }
            _ => push(&f.name, &f.value),
        }
    }
    pairs
}

/// Renders the saved values, posts them back, parses and validates the result as a save
/// would (the config store keeps sensitive and read-only values first).
fn round_trip(
    d: &pb::JobTypeDescriptor,
    saved: &HashMap<String, pb::ConfigValue>,
) -> (HashMap<String, pb::ConfigValue>, Result<(), Vec<crate::validator::FieldError>>) {
    let view = form_view(Which::Admin, d, saved, Source::Saved, &HashMap::new()).expect("the admin form");
    let pairs = browser_post(&view);
    let (parsed, errors) = parse_form(Which::Admin, d, saved, Posted(&pairs));
    assert!(errors.is_empty(), "parse errors: {errors:?} for {pairs:?}");
    let saved_config =
        pb::PersistedJobTypeConfig { job_type: "t".into(), admin_config_values: saved.clone(), ..Default::default() };
    let mut candidate =
        pb::PersistedJobTypeConfig { job_type: "t".into(), admin_config_values: parsed, ..Default::default() };
    keep_unchanged_config(d, Some(&saved_config), &mut candidate);
    let verdict = validate_config(d, &candidate, Some(&saved_config));
    (candidate.admin_config_values, verdict)
}

/// One field per control and field type, each with a saved value that the form must
/// carry through unchanged.
fn every_kind_of_field() -> Vec<(pb::ConfigField, pb::ConfigValue)> {
    let mut cases = Vec::new();
    let mut add = |f: pb::ConfigField, value: pb::ConfigValue| cases.push((f, value));

    add(field("bool_on", Type::Bool, Widget::Toggle), b(true));
    add(field("bool_off", Type::Bool, Widget::Unspecified), b(false));
    add(field("bool_select", Type::Bool, Widget::Select), b(false));

    let mut bounded = field("int", Type::Int64, Widget::Number);
    bounded.min_value = Some(i(1));
    bounded.max_value = Some(i(100));
    add(bounded, i(42));
    add(field("int_negative", Type::Int64, Widget::Unspecified), i(-7));
    let mut int_choice = field("int_choice", Type::Int64, Widget::Select);
    int_choice.options = options(&["1", "2", "3"]);
    add(int_choice, i(2));

    let mut ratio = field("double", Type::Double, Widget::Number);
    ratio.min_value = Some(d(0.0));
    ratio.max_value = Some(i(1));
    add(ratio, d(0.25));
    add(field("double_whole", Type::Double, Widget::Number), d(3.0));
    let mut double_choice = field("double_choice", Type::Double, Widget::Select);
    double_choice.options = options(&["0.5", "1.5"]);
    add(double_choice, d(1.5));

    let mut name = field("string", Type::String, Widget::Text);
    name.required = true;
    name.validation_rules = vec![pb::ValidationRule {
        r#type: pb::ValidationRuleType::Regex as i32,
        expression: "[a-z ]+".into(),
        error_message: String::new(),
    }];
    add(name, s("hello world"));
    add(field("string_textarea", Type::String, Widget::Textarea), s("two\nlines"));
    add(field("string_password_widget", Type::String, Widget::Password), s("shown"));
    let mut zone = field("string_select", Type::String, Widget::Select);
    zone.options = options(&["eu", "us"]);
    add(zone, s("us"));
    add(field("unspecified", Type::Unspecified, Widget::Unspecified), s("anything"));

    let mut mode = field("enum", Type::Enum, Widget::Unspecified);
    mode.options = options(&["fast", "safe"]);
    add(mode, s("safe"));
    add(field("enum_without_options", Type::Enum, Widget::Unspecified), s("free"));

    let mut timeout = field("duration_hours", Type::Duration, Widget::Duration);
    timeout.min_value = Some(dur(1, 0));
    timeout.max_value = Some(i(86_400));
    add(timeout, dur(7200, 0));
    add(field("duration_seconds", Type::Duration, Widget::Unspecified), dur(90, 0));
    add(field("duration_millis", Type::Duration, Widget::Unspecified), dur(0, 250_000_000));
    add(field("duration_odd", Type::Duration, Widget::Unspecified), dur(1, 1));

    add(field("list_strings", Type::List, Widget::Unspecified), strs(&["a", "b c"]));
    add(
        field("list_ints", Type::List, Widget::Unspecified),
        v(Kind::Int64List(pb::Int64List { values: vec![80, 443] })),
    );
    add(
        field("list_doubles", Type::List, Widget::Unspecified),
        v(Kind::DoubleList(pb::DoubleList { values: vec![0.5, 2.0] })),
    );
    add(
        field("list_bools", Type::List, Widget::Unspecified),
        v(Kind::BoolList(pb::BoolList { values: vec![true, false] })),
    );
    let mut disks = field("list_choices", Type::List, Widget::MultiSelect);
    disks.options = options(&["hdd", "ssd", "tape"]);
    add(disks, strs(&["hdd", "tape"]));

    let object = pb::ValueMap {
        fields: [
            ("n".to_string(), i(1)),
            ("s".to_string(), s("x")),
            ("l".to_string(), v(Kind::ListValue(pb::ValueList { values: vec![i(1), s("y"), b(true)] }))),
        ]
        .into(),
    };
    add(field("object", Type::Object, Widget::Unspecified), v(Kind::MapValue(object)));
    let named = |pairs: &[(&str, &str)]| {
        v(Kind::MapValue(pb::ValueMap { fields: pairs.iter().map(|(k, x)| (k.to_string(), s(x))).collect() }))
    };
    add(field("map", Type::Object, Widget::Textarea), named(&[("A", "1"), ("B", " two ")]));
    let mut secret_map = field("secret_map", Type::Object, Widget::Textarea);
    secret_map.sensitive = true;
    add(secret_map, named(&[("token", "s3cret")]));
    add(field("bytes", Type::Bytes, Widget::Unspecified), v(Kind::BytesValue(vec![0, 1, 254, 255])));

    let mut secret = field("sensitive", Type::String, Widget::Password);
    secret.sensitive = true;
    secret.required = true;
    add(secret, s("hunter2"));
    let mut secret_bytes = field("sensitive_bytes", Type::Bytes, Widget::Unspecified);
    secret_bytes.sensitive = true;
    add(secret_bytes, v(Kind::BytesValue(vec![9])));

    let mut fixed_text = field("read_only_text", Type::String, Widget::Text);
    fixed_text.read_only = true;
    add(fixed_text, s("c1"));
    let mut fixed_choice = field("read_only_select", Type::String, Widget::Select);
    fixed_choice.read_only = true;
    fixed_choice.options = options(&["a", "b"]);
    add(fixed_choice, s("b"));
    let mut fixed_flag = field("read_only_bool", Type::Bool, Widget::Toggle);
    fixed_flag.read_only = true;
    add(fixed_flag, b(true));
    cases
}

#[test]
fn every_field_type_survives_render_post_parse_and_the_validator_accepts_it() {
    let cases = every_kind_of_field();
    let types: std::collections::HashSet<i32> = cases.iter().map(|(f, _)| f.field_type).collect();
    for t in [
        Type::Unspecified,
        Type::Bool,
        Type::Int64,
        Type::Double,
        Type::String,
        Type::Bytes,
        Type::Duration,
        Type::Enum,
        Type::List,
        Type::Object,
    ] {
        assert!(types.contains(&(t as i32)), "no case for {t:?}");
    }

    let saved: HashMap<String, pb::ConfigValue> = cases.iter().map(|(f, v)| (f.name.clone(), v.clone())).collect();
    let d = descriptor(cases.iter().map(|(f, _)| f.clone()).collect());
    let (values, verdict) = round_trip(&d, &saved);
    assert_eq!(verdict, Ok(()));
    for (f, expected) in &cases {
        assert_eq!(values.get(&f.name), Some(expected), "{} comes back unchanged", f.name);
    }
    assert_eq!(values.len(), cases.len());
}

#[test]
fn each_field_on_its_own_survives_the_round_trip() {
    // The same, one field per form: no field relies on another for its value or checks.
    for (f, value) in every_kind_of_field() {
        let saved: HashMap<String, pb::ConfigValue> = [(f.name.clone(), value.clone())].into();
        let (values, verdict) = round_trip(&descriptor(vec![f.clone()]), &saved);
        assert_eq!(verdict, Ok(()), "{}", f.name);
        assert_eq!(values.get(&f.name), Some(&value), "{}", f.name);
    }
}

/// A controlling field as a form shows it: its name, how it is declared and its value.
struct Controller {
    field: pb::ConfigField,
    /// The saved value (what the form shows and, for a read-only or sensitive field, what
    /// counts).
    saved: Option<pb::ConfigValue>,
    /// The form's default.
    default: Option<pb::ConfigValue>,
}

fn controllers() -> Vec<Controller> {
    let plain = |t: Type, w: Widget, saved: pb::ConfigValue| Controller {
        field: field("mode", t, w),
        saved: Some(saved),
        default: None,
    };
    let mut list = vec![
        plain(Type::String, Widget::Text, s("s3")),
        plain(Type::String, Widget::Text, s("1")),
        plain(Type::String, Widget::Text, s("true")),
        plain(Type::String, Widget::Text, s("")),
        plain(Type::Int64, Widget::Number, i(1)),
        plain(Type::Int64, Widget::Number, i(2)),
        plain(Type::Double, Widget::Number, d(1.0)),
        plain(Type::Double, Widget::Number, d(1.5)),
        plain(Type::Bool, Widget::Toggle, b(true)),
        plain(Type::Bool, Widget::Toggle, b(false)),
        plain(Type::Duration, Widget::Duration, dur(90, 0)),
        plain(Type::List, Widget::Unspecified, strs(&["a"])),
        plain(Type::Enum, Widget::Unspecified, s("s3")),
    ];
    let mut with_options = field("mode", Type::String, Widget::Select);
    with_options.options = options(&["local", "s3"]);
    list.push(Controller { field: with_options, saved: Some(s("s3")), default: None });
    // Nothing saved: the form's default decides, or nothing does.
    list.push(Controller { field: field("mode", Type::String, Widget::Text), saved: None, default: Some(s("s3")) });
    list.push(Controller { field: field("mode", Type::Int64, Widget::Number), saved: None, default: Some(i(1)) });
    list.push(Controller { field: field("mode", Type::String, Widget::Text), saved: None, default: None });
    // Not posted back: the saved value counts, not the default.
    for (read_only, sensitive) in [(true, false), (false, true)] {
        let mut f = field("mode", Type::String, Widget::Text);
        f.read_only = read_only;
        f.sensitive = sensitive;
        list.push(Controller { field: f, saved: Some(s("s3")), default: Some(s("local")) });
    }
    list
}

fn expected_values() -> Vec<pb::ConfigValue> {
    vec![s("s3"), s("1"), s("true"), s(""), i(1), d(1.0), d(1.5), b(true), b(false), dur(90, 0), s("90s"), strs(&["a"])]
}

#[test]
fn the_form_parser_and_the_validator_agree_on_visibility() {
    let mut shown = 0;
    let mut hidden = 0;
    for c in controllers() {
        for expected in expected_values() {
            // `dep` is required and posted as text no integer parses from: the parser
            // reports it only when it is visible, the validator (which then has no value)
            // says "is required" only when it is visible.
            let mut dep = field("dep", Type::Int64, Widget::Number);
            dep.required = true;
            dep.visible_when_field = "mode".into();
            dep.visible_when_equals = Some(expected.clone());
            let mut d = descriptor(vec![c.field.clone(), dep]);
            if let Some(default) = &c.default {
                d.admin_config_form.as_mut().unwrap().default_values = [("mode".to_string(), default.clone())].into();
            }
            let saved: HashMap<String, pb::ConfigValue> =
                c.saved.iter().map(|v| ("mode".to_string(), v.clone())).collect();

            let view = form_view(Which::Admin, &d, &saved, Source::Saved, &HashMap::new()).unwrap();
            let mut pairs = browser_post(&view);
            for p in pairs.iter_mut().filter(|(k, _)| k == "admin.dep") {
                p.1 = "not a number".into();
            }
            let (parsed, parse_errors) = parse_form(Which::Admin, &d, &saved, Posted(&pairs));
            let parser_sees_it = parse_errors.iter().any(|e| e.field == "admin.dep");

            let saved_config = pb::PersistedJobTypeConfig {
                job_type: "t".into(),
                admin_config_values: saved.clone(),
                ..Default::default()
            };
            let mut candidate =
                pb::PersistedJobTypeConfig { job_type: "t".into(), admin_config_values: parsed, ..Default::default() };
            keep_unchanged_config(&d, Some(&saved_config), &mut candidate);
            let validator_errors = validate_config(&d, &candidate, Some(&saved_config)).err().unwrap_or_default();
            let validator_sees_it = validator_errors.iter().any(|e| e.field == "admin.dep");

            assert_eq!(
                parser_sees_it, validator_sees_it,
                "controller {:?} saved {:?} default {:?}, expected {:?}",
                c.field.name, c.saved, c.default, expected
            );
            if validator_sees_it {
                shown += 1;
            } else {
                hidden += 1;
            }
        }
    }
    assert!(shown > 10 && hidden > 10, "both outcomes are exercised: {shown} shown, {hidden} hidden");
}

#[test]
fn visibility_follows_what_the_form_shows() {
    // The cases the two old copies decided differently, now decided once.
    let case = |controller: pb::ConfigField, saved: pb::ConfigValue, expected: pb::ConfigValue| {
        let mut dep = field("dep", Type::String, Widget::Text);
        dep.required = true;
        dep.visible_when_field = "mode".into();
        dep.visible_when_equals = Some(expected);
        let d = descriptor(vec![controller, dep]);
        let saved: HashMap<String, pb::ConfigValue> = [("mode".to_string(), saved)].into();
        let view = form_view(Which::Admin, &d, &saved, Source::Saved, &HashMap::new()).unwrap();
        let pairs = browser_post(&view);
        let (parsed, _) = parse_form(Which::Admin, &d, &saved, Posted(&pairs));
        let saved_config =
            pb::PersistedJobTypeConfig { job_type: "t".into(), admin_config_values: saved, ..Default::default() };
        let mut candidate =
            pb::PersistedJobTypeConfig { job_type: "t".into(), admin_config_values: parsed, ..Default::default() };
        keep_unchanged_config(&d, Some(&saved_config), &mut candidate);
        validate_config(&d, &candidate, Some(&saved_config)).is_err()
    };
    // An integer and an equal double.
    assert!(case(field("mode", Type::Int64, Widget::Number), i(1), d(1.0)));
    // A number typed into a text field, against a number in the descriptor.
    assert!(case(field("mode", Type::String, Widget::Text), s("5"), i(5)));
    // A ticked box against the string "true".
    assert!(case(field("mode", Type::Bool, Widget::Toggle), b(true), s("true")));
    // A read-only controller that is not posted counts with its saved value.
    let mut fixed = field("mode", Type::String, Widget::Text);
    fixed.read_only = true;
    assert!(case(fixed, s("s3"), s("s3")));
    // Different values stay different.
    assert!(!case(field("mode", Type::Int64, Widget::Number), i(2), d(1.0)));
    assert!(!case(field("mode", Type::String, Widget::Text), s("yes"), b(true)));
}
