//! What the property tests share: their proptest config (a case count fit for CI unless
//! `PROPTEST_CASES` asks for another) and strategies for config values, descriptor
//! fields and forms, and posted form inputs.
//!
//! Field names come from a small pool, so that duplicates, `visible_when_field`
//! conditions, defaults and submitted values refer to each other often. Descriptor text is
//! printable ASCII and never holds [`SECRET_MARK`], nor whole numbers of
//! [`SECRET_NUMBERS`]; submitted values built by [`secret_value`] always do, so a property
//! can tell whether a message echoes a submitted value.

use std::collections::HashMap;

use proptest::{
    collection::{hash_map, vec},
    prelude::*,
    sample::select,
};
use proto::pb::{self, config_value::Kind};

use crate::config_value::distinct_fields;

/// Field names of generated forms.
pub(crate) const NAMES: &[&str] = &["a", "b", "c", "d"];

/// In every string of a [`secret_value`]; never in descriptor text.
pub(crate) const SECRET_MARK: char = '§';

/// Where the whole numbers of a [`secret_value`] lie; descriptors never hold such numbers
/// as text (their numbers are small, or bounds that are values, not text).
pub(crate) const SECRET_NUMBERS: std::ops::Range<i64> = 4_000_000_000_000_000..4_000_000_000_001_000;

/// The config of one property: `cases` cases, unless `PROPTEST_CASES` is set (proptest
/// reads it, with the other `PROPTEST_*` variables, into its default config).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Text as operators and workers type it: words the parsers know, numbers of every kind,
/// JSON, base64, lists, and arbitrary printable text.
pub(crate) fn text() -> impl Strategy<Value = String> + Clone {
    const KNOWN: &[&str] = &[
        "",
        " ",
        "true",
        "false",
        "on",
        "yes",
        "0",
        "1",
        "-1",
        "7",
        " 7 ",
        "1.5",
        "-0.0",
        "1e400",
        "1e20",
        "NaN",
        "inf",
        "9223372036854775807",
        "9223372036854775808",
        "250ms",
        "30s",
        "5m",
        "5min",
        "2h",
        "1d",
        "3w",
        "s",
        "ms",
        "min",
        "h",
        "d",
        "{}",
        "{\"k\":1}",
        "{\"k\":[1,null,{\"x\":\"y\"}]}",
        "[1,2]",
        "null",
        "aGVsbG8=",
        "aGVsbG8",
        "-_-_",
        "a,b",
        " a , ,b ",
        "x\ny\n",
        "1\n2\nthree",
        "local",
        "s3",
        "é",
        "\u{0}",
    ];
    prop_oneof![
        3 => select(KNOWN).prop_map(String::from),
        1 => "[ -~]{0,12}",
    ]
}

/// Config values of every kind, nested up to two levels, with the numbers that break
/// things (NaN, infinities, extremes) among them.
pub(crate) fn kind() -> impl Strategy<Value = Kind> {
    kind_with(text(), prop_oneof![-5i64..5, any::<i64>()].boxed())
}

/// A value, sometimes with its oneof unset (which counts as absent).
pub(crate) fn value() -> impl Strategy<Value = pb::ConfigValue> {
    prop_oneof![9 => kind().prop_map(Some), 1 => Just(None)].prop_map(|kind| pb::ConfigValue { kind })
}

/// A value whose every string holds [`SECRET_MARK`] and whose every whole number lies in
/// [`SECRET_NUMBERS`].
pub(crate) fn secret_value() -> impl Strategy<Value = pb::ConfigValue> {
    let secret_text = text().prop_map(|t| format!("{SECRET_MARK}{t}{SECRET_MARK}"));
    kind_with(secret_text, SECRET_NUMBERS.boxed()).prop_map(|kind| pb::ConfigValue { kind: Some(kind) })
}

/// Secret values ([`secret_value`]) for the fields of `form`: for most fields one of the
/// field's type (so that ranges, options, lengths and patterns are checked, not only the
/// type), for some a value of any kind or none, and now and then a name that is no field.
pub(crate) fn secret_values_for(form: Option<&pb::ConfigForm>) -> BoxedStrategy<HashMap<String, pb::ConfigValue>> {
    let per_field: Vec<BoxedStrategy<Option<(String, pb::ConfigValue)>>> = distinct_fields(form)
        .into_iter()
        .map(|f| {
            let name = f.name.clone();
            prop_oneof![
                1 => Just(None),
                1 => secret_value().prop_map(Some),
                4 => secret_of_type(f.field_type()).prop_map(Some),
            ]
            .prop_map(move |v| v.map(|v| (name.clone(), v)))
            .boxed()
        })
        .collect();
    let stray = prop_oneof![3 => Just(None), 1 => ("[e-z]{1,2}", secret_value()).prop_map(Some)];
    (per_field, stray).prop_map(|(fitted, stray)| fitted.into_iter().chain([stray]).flatten().collect()).boxed()
}

/// A secret value of a field type's kind.
fn secret_of_type(field_type: pb::ConfigFieldType) -> BoxedStrategy<pb::ConfigValue> {
    use pb::ConfigFieldType as Type;
    let text = text().prop_map(|t| format!("{SECRET_MARK}{t}{SECRET_MARK}"));
    let kind = match field_type {
        Type::Bool => any::<bool>().prop_map(Kind::BoolValue).boxed(),
        Type::Int64 => SECRET_NUMBERS.prop_map(Kind::Int64Value).boxed(),
        Type::Double => {
            prop_oneof![(-10.0f64..10.0).prop_map(Kind::DoubleValue), SECRET_NUMBERS.prop_map(Kind::Int64Value),]
                .boxed()
        }
        Type::String | Type::Unspecified | Type::Enum => text.prop_map(Kind::StringValue).boxed(),
        Type::Bytes => vec(any::<u8>(), 0..6).prop_map(Kind::BytesValue).boxed(),
        Type::Duration => (-100i64..100_000, 0i32..1_000_000_000)
            .prop_map(|(seconds, nanos)| Kind::DurationValue(pb::Duration { seconds, nanos }))
            .boxed(),
        Type::List => prop_oneof![
            vec(text, 0..4).prop_map(|values| Kind::StringList(pb::StringList { values })),
            vec(SECRET_NUMBERS, 0..4).prop_map(|values| Kind::Int64List(pb::Int64List { values })),
            vec(secret_value(), 0..4).prop_map(|values| Kind::ListValue(pb::ValueList { values })),
        ]
        .boxed(),
        Type::Object => hash_map("[a-z]{1,3}", secret_value(), 0..3)
            .prop_map(|fields| Kind::MapValue(pb::ValueMap { fields }))
            .boxed(),
    };
    kind.prop_map(|kind| pb::ConfigValue { kind: Some(kind) }).boxed()
}

fn kind_with(
    text: impl Strategy<Value = String> + Clone + 'static,
    ints: BoxedStrategy<i64>,
) -> impl Strategy<Value = Kind> {
    let doubles = prop_oneof![
        -5.0f64..5.0,
        any::<f64>(),
        select(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE, -0.0][..]),
    ];
    let durations = prop_oneof![(-100i64..100_000, -1_000_000_000i32..1_000_000_000), (any::<i64>(), any::<i32>()),]
        .prop_map(|(seconds, nanos)| Kind::DurationValue(pb::Duration { seconds, nanos }));
    let leaf = prop_oneof![
        any::<bool>().prop_map(Kind::BoolValue),
        ints.clone().prop_map(Kind::Int64Value),
        doubles.clone().prop_map(Kind::DoubleValue),
        text.clone().prop_map(Kind::StringValue),
        vec(any::<u8>(), 0..6).prop_map(Kind::BytesValue),
        durations,
        vec(text.clone(), 0..4).prop_map(|values| Kind::StringList(pb::StringList { values })),
        vec(ints, 0..4).prop_map(|values| Kind::Int64List(pb::Int64List { values })),
        vec(doubles, 0..4).prop_map(|values| Kind::DoubleList(pb::DoubleList { values })),
        vec(any::<bool>(), 0..4).prop_map(|values| Kind::BoolList(pb::BoolList { values })),
    ];
    leaf.prop_recursive(2, 12, 3, move |inner| {
        let item = inner.prop_map(|kind| pb::ConfigValue { kind: Some(kind) });
        prop_oneof![
            vec(item.clone(), 0..3).prop_map(|values| Kind::ListValue(pb::ValueList { values })),
            hash_map(text.clone(), item, 0..3).prop_map(|fields| Kind::MapValue(pb::ValueMap { fields })),
        ]
    })
}

/// A map of values by field name (mostly the pool's, sometimes another).
pub(crate) fn values_of(
    value: impl Strategy<Value = pb::ConfigValue>,
) -> impl Strategy<Value = HashMap<String, pb::ConfigValue>> {
    let name = prop_oneof![4 => select(NAMES).prop_map(String::from), 1 => "[a-z]{1,3}"];
    hash_map(name, value, 0..5)
}

/// Whether generated fields carry constraints (required, bounds, options, rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Constraints {
    Any,
    None,
}

/// One descriptor field: any type (including numbers no type has), widget, flags and
/// visibility condition; with `Constraints::Any` also required, bounds, options and
/// validation rules, broken ones included (bad regexes, lengths that are not numbers).
pub(crate) fn field(constraints: Constraints) -> impl Strategy<Value = pb::ConfigField> {
    let plain = (
        select(NAMES),
        prop_oneof![9 => 0i32..10, 1 => any::<i32>()],
        prop_oneof![9 => 0i32..9, 1 => any::<i32>()],
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        prop_oneof![2 => Just(String::new()), 1 => select(NAMES).prop_map(String::from)],
        prop::option::of(value()),
    );
    let bound = || {
        let small = prop_oneof![
            (-5i64..5).prop_map(Kind::Int64Value),
            (-5.0f64..5.0).prop_map(Kind::DoubleValue),
            (0i64..100).prop_map(|seconds| Kind::DurationValue(pb::Duration { seconds, nanos: 0 })),
        ];
        prop::option::of(prop_oneof![3 => small.prop_map(|kind| pb::ConfigValue { kind: Some(kind) }), 1 => value()])
    };
    let constrained = (any::<bool>(), bound(), bound(), vec((text(), any::<bool>()), 0..4), vec(rule(), 0..3));
    (plain, constrained).prop_map(move |(plain, constrained)| {
        let (name, field_type, widget, read_only, sensitive, visible_when_field, visible_when_equals) = plain;
        let mut f = pb::ConfigField {
            name: name.to_string(),
            label: name.to_uppercase(),
            field_type,
            widget,
            read_only,
            sensitive,
            visible_when_field,
            visible_when_equals,
            ..Default::default()
        };
        if constraints == Constraints::Any {
            let (required, min_value, max_value, options, validation_rules) = constrained;
            f.required = required;
            f.min_value = min_value;
            f.max_value = max_value;
            f.options = options
                .into_iter()
                .map(|(value, disabled)| pb::ConfigOption {
                    label: value.clone(),
                    value,
                    disabled,
                    ..Default::default()
                })
                .collect();
            f.validation_rules = validation_rules;
        }
        f
    })
}

fn rule() -> impl Strategy<Value = pb::ValidationRule> {
    let expression = prop_oneof![
        select(&["[a-z]+", "\\d{2,4}", "(", "a{99999}", "x|y", ".*", "3", "0", "-1", "ten", ""][..])
            .prop_map(String::from),
        text(),
    ];
    (prop_oneof![9 => 0i32..7, 1 => any::<i32>()], expression, prop_oneof![Just(String::new()), text()])
        .prop_map(|(r#type, expression, error_message)| pb::ValidationRule { r#type, expression, error_message })
}

/// A form of one or two sections, with defaults for some fields.
pub(crate) fn form(constraints: Constraints) -> impl Strategy<Value = pb::ConfigForm> {
    (vec(vec(field(constraints), 0..4), 1..3), values_of(value())).prop_map(|(sections, default_values)| {
        pb::ConfigForm {
            form_id: "form".into(),
            sections: sections
                .into_iter()
                .enumerate()
                .map(|(i, fields)| pb::ConfigSection { section_id: format!("s{i}"), fields, ..Default::default() })
                .collect(),
            default_values,
            ..Default::default()
        }
    })
}

/// A descriptor of job type `t` with an admin form, maybe a worker form, and worker
/// defaults.
pub(crate) fn descriptor(constraints: Constraints) -> impl Strategy<Value = pb::JobTypeDescriptor> {
    (form(constraints), prop::option::of(form(constraints)), values_of(value())).prop_map(
        |(admin, worker, worker_default_values)| pb::JobTypeDescriptor {
            job_type: "t".into(),
            admin_config_form: Some(admin),
            worker_config_form: worker,
            worker_default_values,
            ..Default::default()
        },
    )
}

/// What a browser (or anyone) may post for a descriptor's forms: pairs named after the
/// pool's fields in either form, their duration units, "clear" boxes and key/value rows,
/// and others, in any order, with repeats.
pub(crate) fn posted() -> impl Strategy<Value = Vec<(String, String)>> {
    let mut names: Vec<String> = Vec::new();
    for prefix in ["admin", "worker"] {
        for n in NAMES {
            names.push(format!("{prefix}.{n}"));
            names.push(format!("{prefix}.{n}"));
            names.push(format!("unit:{prefix}.{n}"));
            names.push(format!("clear:{prefix}.{n}"));
            names.push(format!("key:{prefix}.{n}"));
            names.push(format!("value:{prefix}.{n}"));
            names.push(format!("remove:{prefix}.{n}"));
        }
    }
    names.extend(["x".to_string(), String::new(), "admin.".to_string()]);
    vec((select(names), text()), 0..12)
}
