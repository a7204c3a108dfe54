//! Config values: the rules the validator and the forms must apply the same way, in one
//! place so that they cannot drift apart: field visibility, value keys, durations and
//! "keep unchanged".
//!
//! **Value keys.** A scalar's key ([`value_key`]) is the text the forms show for it and
//! the string an option's `value` would hold: `true`, `42`, `0.5`, the string itself, a
//! duration in seconds (`90s`, `0.25s`). Options are matched by key (every item of a list
//! by its own key, [`list_keys`]). Lists, objects and bytes have no key.
//!
//! **Same value.** Two values are the same ([`same_value`]) when they are identical, or
//! when both are numbers (int64 or double) of exactly the same value: `1` and `1.0` are
//! the same, `2^53 + 1` and the double `2^53` are not. A read-only field may be resubmitted
//! only with the same value as its saved one.
//!
//! **Visibility.** A field with `visible_when_field` and a set `visible_when_equals` is
//! visible only when the controlling field's value matches ([`matches_condition`]): it is
//! the same value, or both are scalars with the same key, that is they look the same in
//! the form (a string `"5"` matches an int `5`, a string `"true"` a bool `true`; the page's
//! script compares the inputs' text the same way). The controlling value is the submitted
//! one, else the form's default ([`Defaults`]: for the worker form the descriptor's
//! `worker_default_values` first). Absent both, the field is hidden. A condition without a
//! value to compare against always holds. Conditions are not chained. Sensitive and
//! read-only controlling fields left out of a submission count with their saved value
//! (see below), so decide visibility after [`keep_unchanged`].
//!
//! **Keep unchanged.** A sensitive or read-only field absent from a submission keeps its
//! saved value ([`keep_unchanged`]): the pages and the API never show sensitive values
//! and browsers do not post disabled inputs. A value whose oneof is unset counts as absent.
//!
//! **Durations** are shown in the largest unit that shows them exactly
//! ([`duration_display`]) and typed as `250ms`, `30s`, `5m`, `2h`, `1d` or a number of
//! seconds ([`parse_duration_text`]).

use std::collections::{HashMap, HashSet};

use proto::pb::{self, config_value::Kind};

// ---- fields and defaults ------------------------------------------------------------

/// A value that is present: the map has it and its oneof is set.
pub fn present<'a>(map: &'a HashMap<String, pb::ConfigValue>, name: &str) -> Option<&'a pb::ConfigValue> {
    map.get(name).filter(|v| v.kind.is_some())
}

/// Every field of the form, section by section, in declaration order.
pub fn form_fields(form: Option<&pb::ConfigForm>) -> impl Iterator<Item = &pb::ConfigField> {
    form.into_iter().flat_map(|f| f.sections.iter()).flat_map(|s| s.fields.iter())
}

/// Every distinct field of the form in declaration order: of a name declared twice, the
/// first declaration counts.
pub fn distinct_fields(form: Option<&pb::ConfigForm>) -> Vec<&pb::ConfigField> {
    let mut seen = HashSet::new();
    form_fields(form).filter(|f| seen.insert(f.name.as_str())).collect()
}

/// Where the defaults of one form come from: `extra` (the descriptor's
/// `worker_default_values` for the worker form) first, then the form's own.
#[derive(Clone, Copy, Default)]
pub struct Defaults<'a> {
    form: Option<&'a pb::ConfigForm>,
    extra: Option<&'a HashMap<String, pb::ConfigValue>>,
}

impl<'a> Defaults<'a> {
    pub fn new(form: Option<&'a pb::ConfigForm>, extra: Option<&'a HashMap<String, pb::ConfigValue>>) -> Self {
        Self { form, extra }
    }

    /// The admin form's defaults.
    pub fn admin(d: &'a pb::JobTypeDescriptor) -> Self {
        Self::new(d.admin_config_form.as_ref(), None)
    }

    /// The worker form's defaults: `worker_default_values`, then the form's own.
    pub fn worker(d: &'a pb::JobTypeDescriptor) -> Self {
        Self::new(d.worker_config_form.as_ref(), Some(&d.worker_default_values))
    }

    /// The default of one field, if any.
    pub fn get(&self, name: &str) -> Option<&'a pb::ConfigValue> {
        self.extra.and_then(|d| present(d, name)).or_else(|| self.form.and_then(|f| present(&f.default_values, name)))
    }
}

// ---- visibility and equality --------------------------------------------------------

/// Whether the field is visible given the (kept-unchanged) values of its form; see the
/// module docs.
pub fn is_visible(field: &pb::ConfigField, values: &HashMap<String, pb::ConfigValue>, defaults: Defaults<'_>) -> bool {
    if field.visible_when_field.is_empty() {
        return true;
    }
    let Some(expected) = field.visible_when_equals.as_ref().filter(|v| v.kind.is_some()) else {
        return true;
    };
    present(values, &field.visible_when_field)
        .or_else(|| defaults.get(&field.visible_when_field))
        .is_some_and(|actual| matches_condition(actual, expected))
}

/// Whether a controlling field's value satisfies `visible_when_equals`: the same value,
/// or scalars with the same key.
pub fn matches_condition(actual: &pb::ConfigValue, expected: &pb::ConfigValue) -> bool {
    if same_value(actual, expected) {
        return true;
    }
    if numbers(actual, expected).is_some() {
        // Two numbers are decided by value alone (-0.0 and 0 are the same number).
        return false;
    }
    match (actual.kind.as_ref().and_then(value_key), expected.kind.as_ref().and_then(value_key)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Identical values, or two numbers of exactly the same value.
pub fn same_value(a: &pb::ConfigValue, b: &pb::ConfigValue) -> bool {
    match numbers(a, b) {
        Some((x, y)) => x.same_as(y),
        None => a == b,
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Double(f64),
}

impl Number {
    fn same_as(self, other: Number) -> bool {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Double(a), Number::Double(b)) => a == b,
            (Number::Int(i), Number::Double(d)) | (Number::Double(d), Number::Int(i)) => int_equals_double(i, d),
        }
    }
}

fn numbers(a: &pb::ConfigValue, b: &pb::ConfigValue) -> Option<(Number, Number)> {
    let number = |v: &pb::ConfigValue| match v.kind {
        Some(Kind::Int64Value(i)) => Some(Number::Int(i)),
        Some(Kind::DoubleValue(d)) => Some(Number::Double(d)),
        _ => None,
    };
    Some((number(a)?, number(b)?))
}

/// Exact: the double must be a whole number within i64's range and equal to `i`.
fn int_equals_double(i: i64, d: f64) -> bool {
    // 2^63 is exactly representable; every double below it in magnitude converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    d.fract() == 0.0 && (-LIMIT..LIMIT).contains(&d) && d as i64 == i
}

// ---- value keys ---------------------------------------------------------------------

/// A scalar as text: what the forms show and what an option's `value` holds. `None` for
/// lists, objects and bytes.
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

/// The items of a list value as keys (`None` for an item that has none); `None` when the
/// value is not a list.
pub fn list_keys(kind: &Kind) -> Option<Vec<Option<String>>> {
    Some(match kind {
        Kind::StringList(l) => l.values.iter().map(|s| Some(s.clone())).collect(),
        Kind::Int64List(l) => l.values.iter().map(|i| Some(i.to_string())).collect(),
        Kind::DoubleList(l) => l.values.iter().map(|d| Some(d.to_string())).collect(),
        Kind::BoolList(l) => l.values.iter().map(|b| Some(b.to_string())).collect(),
        Kind::ListValue(l) => l.values.iter().map(|v| v.kind.as_ref().and_then(value_key)).collect(),
        _ => return None,
    })
}

// ---- durations ----------------------------------------------------------------------

pub const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The units a duration is shown in, largest first, with their length in nanoseconds.
pub const DURATION_UNITS: &[(&str, i128)] = &[
    ("d", 86_400 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
    ("min", 60 * NANOS_PER_SECOND),
    ("s", NANOS_PER_SECOND),
    ("ms", 1_000_000),
];

pub fn duration_nanos(d: &pb::Duration) -> i128 {
    i128::from(d.seconds) * NANOS_PER_SECOND + i128::from(d.nanos)
}

/// A number of nanoseconds as seconds: `90`, `0.25`.
pub fn seconds_text(nanos: i128) -> String {
    if nanos % NANOS_PER_SECOND == 0 {
        (nanos / NANOS_PER_SECOND).to_string()
    } else {
        format!("{}", nanos as f64 / NANOS_PER_SECOND as f64)
    }
}

/// A duration in seconds with its unit: `90s`, `0.25s` (its value key).
pub fn duration_text(d: &pb::Duration) -> String {
    format!("{}s", seconds_text(duration_nanos(d)))
}

/// The amount and the largest unit that shows a duration exactly.
pub fn duration_display(d: &pb::Duration) -> (String, &'static str) {
    let nanos = duration_nanos(d);
    if nanos == 0 {
        return ("0".into(), "s");
    }
    for (unit, per) in DURATION_UNITS {
        if nanos % per == 0 {
            return ((nanos / per).to_string(), unit);
        }
    }
    (seconds_text(nanos), "s")
}

/// A unit of [`DURATION_UNITS`] by name, seconds for any other name.
pub fn unit_named(name: &str) -> (&'static str, i128) {
    DURATION_UNITS.iter().find(|(n, _)| *n == name).copied().unwrap_or(("s", NANOS_PER_SECOND))
}

/// A unit in words, for messages: "minutes".
pub fn unit_words(unit: &str) -> &'static str {
    match unit {
        "ms" => "milliseconds",
        "min" => "minutes",
        "h" => "hours",
        "d" => "days",
        _ => "seconds",
    }
}

/// The units a duration input offers, smallest first, with their names in words: the
/// select of the forms' duration widget. A runtime setting offers the tail of this list
/// that starts at its stored unit ([`duration_units_from`]).
pub const DURATION_CHOICES: &[(&str, &str)] =
    &[("ms", "milliseconds"), ("s", "seconds"), ("min", "minutes"), ("h", "hours"), ("d", "days")];

/// The units of [`DURATION_CHOICES`] from `smallest` up (all of them for an unknown unit).
pub fn duration_units_from(smallest: &str) -> &'static [(&'static str, &'static str)] {
    let from = DURATION_CHOICES.iter().position(|(u, _)| *u == smallest).unwrap_or(0);
    &DURATION_CHOICES[from..]
}

/// The amount and the largest of `units` that shows `nanos` exactly as a whole number;
/// the smallest unit (with a fraction if need be) when none does, and for zero.
pub fn duration_display_in(nanos: i128, units: &[(&'static str, &'static str)]) -> (String, &'static str) {
    let smallest = units.first().map(|(u, _)| *u).unwrap_or("s");
    if nanos != 0 {
        for (unit, _) in units.iter().rev() {
            let per = unit_named(unit).1;
            if nanos % per == 0 {
                return ((nanos / per).to_string(), unit);
            }
        }
    }
    let per = unit_named(smallest).1;
    if nanos % per == 0 {
        ((nanos / per).to_string(), smallest)
    } else {
        (format!("{}", nanos as f64 / per as f64), smallest)
    }
}

/// What the duration widget posts (an amount and a unit of [`DURATION_UNITS`]) as a
/// duration: `Ok(None)` when the amount is blank, the message for an amount that is not a
/// number or a duration beyond protobuf's limit. The config forms and the runtime
/// settings form both read their duration inputs through this.
pub fn parse_duration_input(amount: &str, unit: &str) -> Result<Option<pb::Duration>, String> {
    let amount = amount.trim();
    if amount.is_empty() {
        return Ok(None);
    }
    let (unit, nanos_per) = unit_named(unit);
    let n: f64 = amount
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| format!("must be a number of {}", unit_words(unit)))?;
    duration_from_nanos(n * nanos_per as f64).map(Some)
}

/// An amount of a unit of [`DURATION_UNITS`] in words: "1 minute", "90 seconds".
pub fn in_words(amount: &str, unit: &str) -> String {
    let plural = unit_words(unit);
    if amount == "1" { format!("1 {}", plural.trim_end_matches('s')) } else { format!("{amount} {plural}") }
}

/// "250ms", "30s", "5m", "5min", "2h", "1d" or a bare number of seconds, in nanoseconds.
pub fn parse_duration_text(s: &str) -> Option<f64> {
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

/// A number of nanoseconds as a protobuf duration (rounded to whole nanoseconds), or an
/// error message when it is beyond protobuf's limit of about 10,000 years.
pub fn duration_from_nanos(nanos: f64) -> Result<pb::Duration, String> {
    const MAX_SECONDS: f64 = 315_576_000_000.0;
    let nanos = nanos.round();
    if !nanos.is_finite() || (nanos / 1e9).abs() > MAX_SECONDS {
        return Err("is too long a duration".into());
    }
    let n = nanos as i128;
    Ok(pb::Duration { seconds: (n / NANOS_PER_SECOND) as i64, nanos: (n % NANOS_PER_SECOND) as i32 })
}

// ---- keep unchanged -----------------------------------------------------------------

/// Drops values whose oneof is unset, then gives every sensitive or read-only field of
/// `form` that the submission leaves out its saved value.
pub fn keep_unchanged(
    submitted: &mut HashMap<String, pb::ConfigValue>,
    saved: Option<&HashMap<String, pb::ConfigValue>>,
    form: Option<&pb::ConfigForm>,
) {
    submitted.retain(|_, v| v.kind.is_some());
    let Some(saved) = saved else {
        return;
    };
    for field in form_fields(form).filter(|f| f.sensitive || f.read_only) {
        if !submitted.contains_key(&field.name)
            && let Some(value) = present(saved, &field.name)
        {
            submitted.insert(field.name.clone(), value.clone());
        }
    }
}

/// [`keep_unchanged`] for both forms of a submitted config; an absent `admin_runtime`
/// keeps the saved one too.
pub fn keep_unchanged_config(
    descriptor: &pb::JobTypeDescriptor,
    saved: Option<&pb::PersistedJobTypeConfig>,
    config: &mut pb::PersistedJobTypeConfig,
) {
    keep_unchanged(
        &mut config.admin_config_values,
        saved.map(|s| &s.admin_config_values),
        descriptor.admin_config_form.as_ref(),
    );
    keep_unchanged(
        &mut config.worker_config_values,
        saved.map(|s| &s.worker_config_values),
        descriptor.worker_config_form.as_ref(),
    );
    if config.admin_runtime.is_none() {
        config.admin_runtime = saved.and_then(|s| s.admin_runtime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cv::{b, d, i, s, secs, strs, v};

    fn field(name: &str) -> pb::ConfigField {
        pb::ConfigField { name: name.into(), ..Default::default() }
    }
    fn form(fields: Vec<pb::ConfigField>) -> pb::ConfigForm {
        pb::ConfigForm { sections: vec![pb::ConfigSection { fields, ..Default::default() }], ..Default::default() }
    }
    fn values(pairs: &[(&str, pb::ConfigValue)]) -> HashMap<String, pb::ConfigValue> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn numbers_are_the_same_by_exact_value() {
        assert!(same_value(&i(1), &d(1.0)));
        assert!(same_value(&d(1.0), &i(1)));
        assert!(same_value(&d(-0.0), &i(0)));
        assert!(!same_value(&i(1), &d(1.5)));
        assert!(!same_value(&i((1 << 53) + 1), &d((1u64 << 53) as f64)));
        assert!(!same_value(&i(i64::MAX), &d(9_223_372_036_854_775_808.0)));
        assert!(!same_value(&i(1), &s("1")), "a read-only value keeps its type");
        assert!(same_value(&strs(&["a"]), &strs(&["a"])));
    }

    #[test]
    fn a_condition_matches_the_same_value_or_the_same_key() {
        assert!(matches_condition(&i(2), &d(2.0)));
        assert!(matches_condition(&s("5"), &i(5)));
        assert!(matches_condition(&s("true"), &b(true)));
        assert!(matches_condition(&s("90s"), &secs(90)));
        assert!(matches_condition(&strs(&["a", "b"]), &strs(&["a", "b"])));
        assert!(!matches_condition(&i(3), &d(2.0)));
        assert!(!matches_condition(&s("yes"), &b(true)));
        assert!(!matches_condition(&strs(&["a"]), &s("a")), "a list has no key");
        assert!(!matches_condition(&i((1 << 53) + 1), &d((1u64 << 53) as f64)));
    }

    #[test]
    fn visibility_uses_the_submitted_value_then_the_defaults() {
        let mut bucket = field("bucket");
        bucket.visible_when_field = "mode".into();
        bucket.visible_when_equals = Some(s("s3"));
        let mut f = form(vec![field("mode"), bucket.clone()]);
        f.default_values = values(&[("mode", s("local"))]);
        let extra = values(&[("mode", s("s3"))]);

        assert!(!is_visible(&bucket, &values(&[]), Defaults::new(Some(&f), None)));
        assert!(is_visible(&bucket, &values(&[]), Defaults::new(Some(&f), Some(&extra))));
        assert!(is_visible(&bucket, &values(&[("mode", s("s3"))]), Defaults::new(Some(&f), None)));
        assert!(!is_visible(&bucket, &values(&[("mode", s("gcs"))]), Defaults::new(Some(&f), Some(&extra))));
        // A value whose oneof is unset is absent: the default decides.
        let unset = values(&[("mode", pb::ConfigValue { kind: None })]);
        assert!(is_visible(&bucket, &unset, Defaults::new(Some(&f), Some(&extra))));
        // No default either: hidden.
        assert!(!is_visible(&bucket, &values(&[]), Defaults::default()));
    }

    #[test]
    fn a_condition_without_a_field_or_a_value_always_holds() {
        let mut no_value = field("x");
        no_value.visible_when_field = "mode".into();
        no_value.visible_when_equals = Some(pb::ConfigValue { kind: None });
        assert!(is_visible(&no_value, &values(&[]), Defaults::default()));
        let mut no_field = field("x");
        no_field.visible_when_equals = Some(s("on"));
        assert!(is_visible(&no_field, &values(&[]), Defaults::default()));
    }

    #[test]
    fn value_keys_are_what_the_form_shows() {
        assert_eq!(value_key(&Kind::BoolValue(true)).as_deref(), Some("true"));
        assert_eq!(value_key(&Kind::DoubleValue(1.0)).as_deref(), Some("1"));
        assert_eq!(value_key(&Kind::DoubleValue(0.5)).as_deref(), Some("0.5"));
        assert_eq!(
            value_key(&Kind::DurationValue(pb::Duration { seconds: 0, nanos: 250_000_000 })).as_deref(),
            Some("0.25s")
        );
        assert_eq!(value_key(&Kind::BytesValue(vec![1])), None);
        let mixed = Kind::ListValue(pb::ValueList { values: vec![i(1), s("a"), v(Kind::BytesValue(vec![]))] });
        assert_eq!(list_keys(&mixed), Some(vec![Some("1".into()), Some("a".into()), None]));
        assert_eq!(list_keys(&Kind::StringValue("a".into())), None);
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
    fn durations_round_trip_and_have_a_limit() {
        assert_eq!(duration_display(&pb::Duration { seconds: 0, nanos: 1 }), ("0.000000001".into(), "s"));
        assert_eq!(duration_from_nanos(1.5e9), Ok(pb::Duration { seconds: 1, nanos: 500_000_000 }));
        assert_eq!(duration_from_nanos(-1.5e9), Ok(pb::Duration { seconds: -1, nanos: -500_000_000 }));
        assert!(duration_from_nanos(1e30).is_err());
        assert!(duration_from_nanos(f64::NAN).is_err());
        assert_eq!(seconds_text(3 * NANOS_PER_SECOND), "3");
        assert_eq!(unit_named("min"), ("min", 60 * NANOS_PER_SECOND));
        assert_eq!(unit_named("weeks"), ("s", NANOS_PER_SECOND));
    }

    #[test]
    fn a_duration_input_reads_an_amount_of_a_unit_and_shows_in_the_largest_exact_unit() {
        assert_eq!(parse_duration_input(" 1.5 ", "min"), Ok(Some(pb::Duration { seconds: 90, nanos: 0 })));
        assert_eq!(parse_duration_input("", "h"), Ok(None));
        assert_eq!(parse_duration_input("soon", "h"), Err("must be a number of hours".into()));
        assert_eq!(parse_duration_input("2", "fortnights"), Ok(Some(pb::Duration { seconds: 2, nanos: 0 })));
        assert!(parse_duration_input("1e300", "d").is_err());
        let from_seconds = duration_units_from("s");
        assert_eq!(from_seconds.iter().map(|(u, _)| *u).collect::<Vec<_>>(), ["s", "min", "h", "d"]);
        assert_eq!(duration_units_from("nope").len(), DURATION_CHOICES.len());
        let minutes = duration_units_from("min");
        assert_eq!(duration_display_in(0, minutes), ("0".into(), "min"));
        assert_eq!(duration_display_in(7200 * NANOS_PER_SECOND, minutes), ("2".into(), "h"));
        assert_eq!(duration_display_in(90 * NANOS_PER_SECOND, minutes), ("1.5".into(), "min"));
        assert_eq!(duration_display_in(90 * NANOS_PER_SECOND, from_seconds), ("90".into(), "s"));
        assert_eq!(in_words("1", "h"), "1 hour");
        assert_eq!(in_words("7", "d"), "7 days");
    }

    #[test]
    fn sensitive_and_read_only_fields_left_out_keep_their_saved_values() {
        let mut token = field("token");
        token.sensitive = true;
        let mut id = field("id");
        id.read_only = true;
        let f = form(vec![token, id, field("name")]);
        let saved = values(&[("token", s("t")), ("id", s("c1")), ("name", s("old"))]);

        let mut submitted = values(&[("name", s("new")), ("id", pb::ConfigValue { kind: None })]);
        keep_unchanged(&mut submitted, Some(&saved), Some(&f));
        assert_eq!(submitted, values(&[("token", s("t")), ("id", s("c1")), ("name", s("new"))]));

        let mut cleared = values(&[("token", s(""))]);
        keep_unchanged(&mut cleared, Some(&saved), Some(&f));
        assert_eq!(cleared.get("token"), Some(&s("")), "a submitted value wins, even an empty one");

        let mut nothing_saved = values(&[("id", pb::ConfigValue { kind: None })]);
        keep_unchanged(&mut nothing_saved, None, Some(&f));
        assert!(nothing_saved.is_empty());
    }

    #[test]
    fn keep_unchanged_config_covers_both_forms_and_the_runtime() {
        let mut token = field("token");
        token.sensitive = true;
        let d = pb::JobTypeDescriptor {
            admin_config_form: Some(form(vec![token.clone()])),
            worker_config_form: Some(form(vec![token])),
            ..Default::default()
        };
        let saved = pb::PersistedJobTypeConfig {
            admin_config_values: values(&[("token", s("a"))]),
            worker_config_values: values(&[("token", s("w"))]),
            admin_runtime: Some(pb::AdminRuntimeConfig { retry_limit: 7, ..Default::default() }),
            ..Default::default()
        };
        let mut c = pb::PersistedJobTypeConfig::default();
        keep_unchanged_config(&d, Some(&saved), &mut c);
        assert_eq!(c.admin_config_values, saved.admin_config_values);
        assert_eq!(c.worker_config_values, saved.worker_config_values);
        assert_eq!(c.admin_runtime, saved.admin_runtime);
    }
}
