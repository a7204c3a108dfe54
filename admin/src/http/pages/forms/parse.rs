//! Parsing: the posted inputs of one descriptor form as typed config values. Only text
//! becomes typed values here; every rule is the validator's (see the parent module).

use std::collections::HashMap;

use base64::Engine;
use proto::pb::{self, ConfigFieldType as Type, config_value::Kind};

use super::{ItemKind, Posted, Which, control_of, kv, list_item_kind};
use crate::{
    config_value::{
        distinct_fields, duration_from_nanos, is_visible, keep_unchanged, parse_duration_input, parse_duration_text,
        present,
    },
    validator::FieldError,
};

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
    let form = which.form(descriptor);
    let list = distinct_fields(form);
    let mut values = HashMap::new();
    let mut failed: Vec<(&pb::ConfigField, String)> = Vec::new();
    for f in &list {
        if f.read_only {
            continue;
        }
        let name = format!("{prefix}.{}", f.name);
        let hint_value = present(saved, &f.name).or_else(|| which.defaults(descriptor).get(&f.name));
        match parse_field(f, &name, hint_value, posted) {
            Ok(Some(kind)) => {
                values.insert(f.name.clone(), pb::ConfigValue { kind: Some(kind) });
            }
            Ok(None) => {}
            Err(message) => failed.push((f, message)),
        }
    }
    // A hidden field is not validated, so input it cannot parse is ignored too. Visibility
    // is decided on the values the validator will see: sensitive and read-only fields
    // left out keep their saved values.
    let mut kept = values.clone();
    keep_unchanged(&mut kept, Some(saved), form);
    let errors = failed
        .into_iter()
        .filter(|(f, _)| is_visible(f, &kept, which.defaults(descriptor)))
        .map(|(f, message)| FieldError::new(format!("{prefix}.{}", f.name), message))
        .collect();
    (values, errors)
}

fn parse_field(
    f: &pb::ConfigField,
    name: &str,
    current: Option<&pb::ConfigValue>,
    posted: Posted<'_>,
) -> Result<Option<Kind>, String> {
    let field_type = f.field_type();
    // A map field reads the rows of its key/value editor when the page showed one, and
    // JSON text otherwise (see `kv`).
    if field_type == Type::Object
        && let Some(rows) = kv::posted_rows(posted, name)
    {
        return kv::parse(f, &rows, posted, name, current);
    }
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
        // A secret map posted as JSON text (a client without the editor's rows) is read
        // like any other secret.
        "password" | "kv" => {
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
        "duration" => parse_duration_input(
            posted.first(name).unwrap_or_default(),
            posted.first(&format!("unit:{name}")).unwrap_or("s"),
        )
        .map(|d| d.map(Kind::DurationValue)),
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
