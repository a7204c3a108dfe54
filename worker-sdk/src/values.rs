//! Typed readers over a request's config values (`admin_config_values`,
//! `worker_config_values`, job parameters): `get_i64(map, "limit")?` and friends, with
//! errors that name the field and say what was expected and what was found.
//!
//! For each type there are three readers: `get_*` (missing is an error), `opt_*`
//! (missing is `None`) and `*_or` (missing is the default). A present value of the
//! wrong kind is an error in all three.

use std::{collections::HashMap, time::Duration};

use crate::pb::{self, config_value::Kind};

/// The config values of a request, by field name.
pub type Values = HashMap<String, pb::ConfigValue>;

/// Why a config value could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("config field {field} is missing")]
    Missing { field: String },
    #[error("config field {field}: expected {expected}, got {got}")]
    WrongType { field: String, expected: &'static str, got: &'static str },
    #[error("config field {field}: {message}")]
    Invalid { field: String, message: String },
}

/// The name of a value's kind, as used in error messages.
pub fn kind_name(value: &pb::ConfigValue) -> &'static str {
    match &value.kind {
        None => "no value",
        Some(Kind::BoolValue(_)) => "bool",
        Some(Kind::Int64Value(_)) => "int64",
        Some(Kind::DoubleValue(_)) => "double",
        Some(Kind::StringValue(_)) => "string",
        Some(Kind::BytesValue(_)) => "bytes",
        Some(Kind::DurationValue(_)) => "duration",
        Some(Kind::StringList(_)) => "string list",
        Some(Kind::Int64List(_)) => "int64 list",
        Some(Kind::DoubleList(_)) => "double list",
        Some(Kind::BoolList(_)) => "bool list",
        Some(Kind::ListValue(_)) => "list",
        Some(Kind::MapValue(_)) => "map",
    }
}

/// What an extractor says about one value.
enum Read<T> {
    Ok(T),
    /// The kind does not fit.
    Wrong,
    /// The kind fits but the value does not (e.g. a negative duration).
    Bad(String),
}

fn read<T>(
    values: &Values,
    field: &str,
    expected: &'static str,
    extract: impl Fn(&Kind) -> Read<T>,
) -> Result<Option<T>, ValueError> {
    let Some(value) = values.get(field) else {
        return Ok(None);
    };
    let Some(kind) = &value.kind else {
        return Ok(None);
    };
    match extract(kind) {
        Read::Ok(v) => Ok(Some(v)),
        Read::Wrong => Err(ValueError::WrongType { field: field.to_string(), expected, got: kind_name(value) }),
        Read::Bad(message) => Err(ValueError::Invalid { field: field.to_string(), message }),
    }
}

fn required<T>(field: &str, v: Result<Option<T>, ValueError>) -> Result<T, ValueError> {
    v?.ok_or_else(|| ValueError::Missing { field: field.to_string() })
}

macro_rules! readers {
    ($( $(#[$doc:meta])* $get:ident, $opt:ident, $or:ident: $t:ty, $expected:literal, $extract:expr; )*) => {
        $(
            $(#[$doc])*
            pub fn $get(values: &Values, field: &str) -> Result<$t, ValueError> {
                required(field, $opt(values, field))
            }

            $(#[$doc])*
            /// Missing is `None`.
            pub fn $opt(values: &Values, field: &str) -> Result<Option<$t>, ValueError> {
                read(values, field, $expected, $extract)
            }

            $(#[$doc])*
            /// Missing is `default`.
            pub fn $or(values: &Values, field: &str, default: $t) -> Result<$t, ValueError> {
                Ok($opt(values, field)?.unwrap_or(default))
            }
        )*
    };
}

readers! {
    /// An int64 (a double with no fractional part is accepted).
    get_i64, opt_i64, i64_or: i64, "int64", |k: &Kind| match k {
        Kind::Int64Value(v) => Read::Ok(*v),
        Kind::DoubleValue(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Read::Ok(*v as i64),
        _ => Read::Wrong,
    };
    /// A double (an int64 is accepted).
    get_f64, opt_f64, f64_or: f64, "double", |k: &Kind| match k {
        Kind::DoubleValue(v) => Read::Ok(*v),
        Kind::Int64Value(v) => Read::Ok(*v as f64),
        _ => Read::Wrong,
    };
    /// A bool.
    get_bool, opt_bool, bool_or: bool, "bool", |k: &Kind| match k {
        Kind::BoolValue(v) => Read::Ok(*v),
        _ => Read::Wrong,
    };
    /// A string.
    get_string, opt_string, string_or: String, "string", |k: &Kind| match k {
        Kind::StringValue(v) => Read::Ok(v.clone()),
        _ => Read::Wrong,
    };
    /// Bytes.
    get_bytes, opt_bytes, bytes_or: Vec<u8>, "bytes", |k: &Kind| match k {
        Kind::BytesValue(v) => Read::Ok(v.clone()),
        _ => Read::Wrong,
    };
    /// A non-negative duration (an int64 counts as seconds).
    get_duration, opt_duration, duration_or: Duration, "duration", |k: &Kind| match k {
        Kind::DurationValue(d) if d.seconds >= 0 && d.nanos >= 0 => {
            Read::Ok(Duration::new(d.seconds as u64, d.nanos as u32))
        }
        Kind::DurationValue(d) => Read::Bad(format!("duration {}s {}ns is negative", d.seconds, d.nanos)),
        Kind::Int64Value(s) if *s >= 0 => Read::Ok(Duration::from_secs(*s as u64)),
        Kind::Int64Value(s) => Read::Bad(format!("duration {s}s is negative")),
        _ => Read::Wrong,
    };
    /// A list of strings (a generic list holding only strings is accepted).
    get_string_list, opt_string_list, string_list_or: Vec<String>, "string list", |k: &Kind| match k {
        Kind::StringList(l) => Read::Ok(l.values.clone()),
        Kind::ListValue(l) => l
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map_or(Read::Wrong, Read::Ok),
        _ => Read::Wrong,
    };
    /// A list of int64s.
    get_i64_list, opt_i64_list, i64_list_or: Vec<i64>, "int64 list", |k: &Kind| match k {
        Kind::Int64List(l) => Read::Ok(l.values.clone()),
        _ => Read::Wrong,
    };
    /// A list of doubles (an int64 list is accepted).
    get_f64_list, opt_f64_list, f64_list_or: Vec<f64>, "double list", |k: &Kind| match k {
        Kind::DoubleList(l) => Read::Ok(l.values.clone()),
        Kind::Int64List(l) => Read::Ok(l.values.iter().map(|v| *v as f64).collect()),
        _ => Read::Wrong,
    };
    /// A list of bools.
    get_bool_list, opt_bool_list, bool_list_or: Vec<bool>, "bool list", |k: &Kind| match k {
        Kind::BoolList(l) => Read::Ok(l.values.clone()),
        _ => Read::Wrong,
    };
    /// An object (named values).
    get_map, opt_map, map_or: Values, "map", |k: &Kind| match k {
        Kind::MapValue(m) => Read::Ok(m.fields.clone()),
        _ => Read::Wrong,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value;

    fn values() -> Values {
        [
            ("n", value::int(7)),
            ("ratio", value::double(0.25)),
            ("whole", value::double(3.0)),
            ("on", value::boolean(true)),
            ("name", value::string("x")),
            ("age", value::duration(Duration::from_secs(90))),
            ("secs", value::int(5)),
            ("neg", value::int(-5)),
            ("paths", value::string_list(["/a", "/b"])),
            ("generic", value::list([value::string("p")])),
            ("empty", pb::ConfigValue { kind: None }),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn readers_return_typed_values() {
        let v = values();
        assert_eq!(get_i64(&v, "n"), Ok(7));
        assert_eq!(get_i64(&v, "whole"), Ok(3));
        assert_eq!(get_f64(&v, "ratio"), Ok(0.25));
        assert_eq!(get_f64(&v, "n"), Ok(7.0));
        assert_eq!(get_bool(&v, "on"), Ok(true));
        assert_eq!(get_string(&v, "name").as_deref(), Ok("x"));
        assert_eq!(get_duration(&v, "age"), Ok(Duration::from_secs(90)));
        assert_eq!(get_duration(&v, "secs"), Ok(Duration::from_secs(5)));
        assert_eq!(get_string_list(&v, "paths"), Ok(vec!["/a".to_string(), "/b".to_string()]));
        assert_eq!(get_string_list(&v, "generic"), Ok(vec!["p".to_string()]));
    }

    #[test]
    fn missing_values_use_the_option_or_the_default() {
        let v = values();
        assert_eq!(opt_i64(&v, "nope"), Ok(None));
        assert_eq!(opt_i64(&v, "empty"), Ok(None));
        assert_eq!(i64_or(&v, "nope", 9), Ok(9));
        assert_eq!(i64_or(&v, "n", 9), Ok(7));
        assert_eq!(get_i64(&v, "nope"), Err(ValueError::Missing { field: "nope".into() }));
    }

    #[test]
    fn errors_name_the_field_and_both_kinds() {
        let v = values();
        let err = get_i64(&v, "name").unwrap_err();
        assert_eq!(err, ValueError::WrongType { field: "name".into(), expected: "int64", got: "string" });
        assert_eq!(err.to_string(), "config field name: expected int64, got string");
        assert!(i64_or(&v, "ratio", 1).is_err(), "a wrong kind is an error even with a default");
        assert!(matches!(get_duration(&v, "neg"), Err(ValueError::Invalid { .. })));
    }
}
