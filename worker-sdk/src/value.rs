//! Constructors for `pb::ConfigValue` (`value::int(3)`, `value::duration(..)`) and the
//! `IntoValue` conversions the descriptor builders accept.

use std::time::Duration;

use crate::pb::{self, config_value::Kind};

fn of(kind: Kind) -> pb::ConfigValue {
    pb::ConfigValue { kind: Some(kind) }
}

pub fn int(v: i64) -> pb::ConfigValue {
    of(Kind::Int64Value(v))
}

pub fn double(v: f64) -> pb::ConfigValue {
    of(Kind::DoubleValue(v))
}

pub fn boolean(v: bool) -> pb::ConfigValue {
    of(Kind::BoolValue(v))
}

pub fn string(v: impl Into<String>) -> pb::ConfigValue {
    of(Kind::StringValue(v.into()))
}

pub fn bytes(v: impl Into<Vec<u8>>) -> pb::ConfigValue {
    of(Kind::BytesValue(v.into()))
}

/// Durations beyond what protobuf can hold saturate.
pub fn duration(v: Duration) -> pb::ConfigValue {
    of(Kind::DurationValue(proto::Duration {
        seconds: i64::try_from(v.as_secs()).unwrap_or(i64::MAX),
        nanos: v.subsec_nanos() as i32,
    }))
}

pub fn string_list<S: Into<String>>(v: impl IntoIterator<Item = S>) -> pb::ConfigValue {
    of(Kind::StringList(pb::StringList { values: v.into_iter().map(Into::into).collect() }))
}

pub fn int_list(v: impl IntoIterator<Item = i64>) -> pb::ConfigValue {
    of(Kind::Int64List(pb::Int64List { values: v.into_iter().collect() }))
}

pub fn double_list(v: impl IntoIterator<Item = f64>) -> pb::ConfigValue {
    of(Kind::DoubleList(pb::DoubleList { values: v.into_iter().collect() }))
}

pub fn bool_list(v: impl IntoIterator<Item = bool>) -> pb::ConfigValue {
    of(Kind::BoolList(pb::BoolList { values: v.into_iter().collect() }))
}

/// A list of arbitrary values.
pub fn list(v: impl IntoIterator<Item = pb::ConfigValue>) -> pb::ConfigValue {
    of(Kind::ListValue(pb::ValueList { values: v.into_iter().collect() }))
}

/// An object: named values.
pub fn map<K: Into<String>>(v: impl IntoIterator<Item = (K, pb::ConfigValue)>) -> pb::ConfigValue {
    of(Kind::MapValue(pb::ValueMap { fields: v.into_iter().map(|(k, v)| (k.into(), v)).collect() }))
}

/// Anything the builders accept where a config value goes.
pub trait IntoValue {
    fn into_value(self) -> pb::ConfigValue;
}

impl IntoValue for pb::ConfigValue {
    fn into_value(self) -> pb::ConfigValue {
        self
    }
}

macro_rules! into_value {
    ($($t:ty => $f:expr),* $(,)?) => {
        $(impl IntoValue for $t {
            fn into_value(self) -> pb::ConfigValue {
                $f(self)
            }
        })*
    };
}

into_value! {
    i64 => int,
    i32 => |v: i32| int(v.into()),
    u32 => |v: u32| int(v.into()),
    f64 => double,
    bool => boolean,
    &str => string,
    String => string,
    Duration => duration,
    Vec<String> => string_list,
    &[&str] => |v: &[&str]| string_list(v.iter().copied()),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_the_matching_kind() {
        assert_eq!(int(3).kind, Some(Kind::Int64Value(3)));
        assert_eq!(3i32.into_value(), int(3));
        assert_eq!("a".into_value(), string("a"));
        assert_eq!(
            duration(Duration::from_millis(1500)).kind,
            Some(Kind::DurationValue(proto::Duration { seconds: 1, nanos: 500_000_000 }))
        );
        assert_eq!((&["a", "b"][..]).into_value(), string_list(["a", "b"]));
    }
}
