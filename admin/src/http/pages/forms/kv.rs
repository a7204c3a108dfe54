//! The key/value editor of map fields (OBJECT fields whose entries are named strings,
//! such as a script's environment and secrets): rows of a name and a value, posted as
//! repeated `key:<input>` and `value:<input>` pairs in row order, plus `remove:<input>`
//! with the name of each saved secret to delete. Without JavaScript the form has a few
//! empty rows to add entries; the page script adds an "Add row" button.
//!
//! **When.** A sensitive OBJECT field is always edited as rows (its values are never
//! shown, so there is no text to edit). Any other OBJECT field is edited as rows when
//! rows show it exactly ([`fits`]): its value (saved, else its default) maps names to
//! strings only, or it has none and its placeholder is such a JSON object
//! (`{"REPORT_DAYS": "7"}`). Anything else (numbers, nested objects) stays a JSON
//! textarea, so no value is changed by being shown. The parser reads rows when rows were
//! posted and JSON text otherwise, whichever the page showed.
//!
//! **Rules.** Names are trimmed; values are kept as typed. A row with a value but no name,
//! and a name given twice, are errors on the field (by row number: messages never repeat
//! what was typed). An empty row is ignored. For a plain map, the rows are the whole new
//! value (no rows: none, or an empty map when it had a value). For a secret map, the saved
//! entries are the start: a row with a value sets its name; a saved name with a blank
//! value keeps its value; a ticked "Remove" deletes it; a new name without a value is an
//! error. A secret map that nothing changed is not posted as a value at all, so the config
//! store keeps it as it keeps any untouched secret.

use std::collections::{BTreeMap, HashSet};

use proto::pb::{self, config_value::Kind};

use super::Posted;

/// The empty rows a form shows for new entries (the page script can add more).
pub const EMPTY_ROWS: usize = 3;

/// One row of the editor as the template shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvRow {
    /// From 1, as messages count rows.
    pub number: usize,
    pub key: String,
    /// Never a secret's value.
    pub value: String,
    /// A saved secret's name: shown read-only, its value never; blank keeps it.
    pub saved: bool,
    /// Its "Remove" box was ticked (a saved secret).
    pub removed: bool,
    /// An error names this row.
    pub invalid: bool,
}

/// Whether rows show the field's value (or, with none, its placeholder) exactly.
pub fn fits(f: &pb::ConfigField, current: Option<&pb::ConfigValue>) -> bool {
    match current.and_then(|c| c.kind.as_ref()) {
        Some(Kind::MapValue(m)) => m.fields.values().all(|v| matches!(v.kind, Some(Kind::StringValue(_)))),
        Some(_) => false,
        None => match serde_json::from_str::<serde_json::Value>(f.placeholder.trim()) {
            Ok(serde_json::Value::Object(m)) => m.values().all(serde_json::Value::is_string),
            _ => false,
        },
    }
}

/// The entries of a map value, by name.
fn entries(current: Option<&pb::ConfigValue>) -> BTreeMap<String, pb::ConfigValue> {
    match current.and_then(|c| c.kind.as_ref()) {
        Some(Kind::MapValue(m)) => m.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    }
}

/// The rows posted for `name` (names trimmed), or `None` when the form posted none.
pub fn posted_rows<'a>(posted: Posted<'a>, name: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let (key_name, value_name) = (format!("key:{name}"), format!("value:{name}"));
    let keys: Vec<&str> = posted.all(&key_name).map(str::trim).collect();
    let values: Vec<&str> = posted.all(&value_name).collect();
    if keys.is_empty() && values.is_empty() {
        return None;
    }
    let n = keys.len().max(values.len());
    Some((0..n).map(|i| (keys.get(i).copied().unwrap_or(""), values.get(i).copied().unwrap_or(""))).collect())
}

/// The names whose "Remove" box was ticked.
fn removed<'a>(posted: Posted<'a>, name: &str) -> HashSet<&'a str> {
    posted.all(&format!("remove:{name}")).map(str::trim).collect()
}

/// What is wrong with the rows, by row index (from 0), first problem of a row only.
fn problems(rows: &[(&str, &str)], secret: bool, saved: &BTreeMap<String, pb::ConfigValue>) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, (key, value)) in rows.iter().enumerate() {
        let first = rows[..i].iter().position(|(k, _)| !key.is_empty() && k == key);
        if key.is_empty() && !value.is_empty() {
            found.push((i, format!("row {} has a value but no name", i + 1)));
        } else if let Some(first) = first {
            found.push((i, format!("row {} repeats the name of row {}", i + 1, first + 1)));
        } else if secret && !key.is_empty() && value.is_empty() && !saved.contains_key(*key) {
            found.push((i, format!("row {} has a name but no value", i + 1)));
        }
    }
    found
}

/// The posted rows of a map field as its new value; see the module docs. `current` is
/// the saved value (else the default).
pub fn parse(
    f: &pb::ConfigField,
    rows: &[(&str, &str)],
    posted: Posted<'_>,
    name: &str,
    current: Option<&pb::ConfigValue>,
) -> Result<Option<Kind>, String> {
    let saved = entries(current);
    let problems = problems(rows, f.sensitive, &saved);
    if !problems.is_empty() {
        return Err(problems.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "));
    }
    let string = |v: &str| pb::ConfigValue { kind: Some(Kind::StringValue(v.to_string())) };
    let map = |fields: BTreeMap<String, pb::ConfigValue>| {
        Kind::MapValue(pb::ValueMap { fields: fields.into_iter().collect() })
    };
    if !f.sensitive {
        let fields: BTreeMap<String, pb::ConfigValue> =
            rows.iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.to_string(), string(v))).collect();
        if fields.is_empty() && current.is_none() {
            return Ok(None);
        }
        return Ok(Some(map(fields)));
    }
    let remove = removed(posted, name);
    let mut fields = saved.clone();
    let mut changed = false;
    for (key, value) in rows.iter().filter(|(k, _)| !k.is_empty() && !remove.contains(k)) {
        if !value.is_empty() {
            fields.insert(key.to_string(), string(value));
            changed = true;
        }
    }
    for key in &remove {
        changed |= fields.remove(*key).is_some();
    }
    Ok(changed.then(|| map(fields)))
}

/// The rows the form shows: the value's entries (a secret's without their values) and
/// empty rows, or what was posted (a secret's values left out) with the rows an error
/// names marked. A read-only field gets no empty rows.
pub fn rows(f: &pb::ConfigField, current: Option<&pb::ConfigValue>, posted: Option<(Posted<'_>, &str)>) -> Vec<KvRow> {
    let saved = entries(current);
    let mut shown: Vec<KvRow> = match posted.and_then(|(p, name)| posted_rows(p, name).map(|rows| (p, name, rows))) {
        Some((p, name, rows)) => {
            let bad: HashSet<usize> = problems(&rows, f.sensitive, &saved).into_iter().map(|(i, _)| i).collect();
            let remove = removed(p, name);
            rows.iter()
                .enumerate()
                .map(|(i, (key, value))| KvRow {
                    number: i + 1,
                    key: key.to_string(),
                    value: if f.sensitive { String::new() } else { value.to_string() },
                    saved: f.sensitive && saved.contains_key(*key),
                    removed: remove.contains(key),
                    invalid: bad.contains(&i),
                })
                .collect()
        }
        None => saved
            .iter()
            .enumerate()
            .map(|(i, (key, value))| KvRow {
                number: i + 1,
                key: key.clone(),
                value: match (&value.kind, f.sensitive) {
                    (Some(Kind::StringValue(s)), false) => s.clone(),
                    _ => String::new(),
                },
                saved: f.sensitive,
                ..Default::default()
            })
            .collect(),
    };
    let ends_empty = shown.last().is_some_and(|r| r.key.is_empty() && r.value.is_empty() && !r.saved);
    if !f.read_only && !ends_empty {
        let from = shown.len();
        shown.extend((from..from + EMPTY_ROWS).map(|i| KvRow { number: i + 1, ..Default::default() }));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> pb::ConfigValue {
        pb::ConfigValue {
            kind: Some(Kind::MapValue(pb::ValueMap {
                fields: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), pb::ConfigValue { kind: Some(Kind::StringValue(v.to_string())) }))
                    .collect(),
            })),
        }
    }

    fn object(sensitive: bool, placeholder: &str) -> pb::ConfigField {
        pb::ConfigField {
            name: "env".into(),
            field_type: pb::ConfigFieldType::Object as i32,
            sensitive,
            placeholder: placeholder.into(),
            ..Default::default()
        }
    }

    fn parsed(
        f: &pb::ConfigField,
        pairs: &[(&str, &str)],
        current: Option<&pb::ConfigValue>,
    ) -> Result<Option<Kind>, String> {
        let p = post(pairs);
        let rows = posted_rows(Posted(&p), "admin.env").expect("rows were posted");
        parse(f, &rows, Posted(&p), "admin.env", current)
    }

    #[test]
    fn rows_are_used_where_they_show_the_value_exactly() {
        let f = object(false, "");
        assert!(fits(&f, Some(&map(&[("A", "1")]))));
        let number = pb::ConfigValue {
            kind: Some(Kind::MapValue(pb::ValueMap {
                fields: [("n".to_string(), pb::ConfigValue { kind: Some(Kind::Int64Value(1)) })].into(),
            })),
        };
        assert!(!fits(&f, Some(&number)), "a number would come back as text");
        assert!(!fits(&f, None), "nothing to go by: JSON");
        assert!(fits(&object(false, r#"{"REPORT_DAYS": "7"}"#), None));
        assert!(!fits(&object(false, r#"{"job": {"entry": "x"}}"#), None));
    }

    #[test]
    fn plain_rows_become_the_map_and_empty_rows_are_ignored() {
        let f = object(false, "");
        let got = parsed(
            &f,
            &[("key:admin.env", " A "), ("value:admin.env", "1 "), ("key:admin.env", ""), ("value:admin.env", "")],
            None,
        );
        assert_eq!(got, Ok(map(&[("A", "1 ")]).kind));
        let cleared = parsed(&f, &[("key:admin.env", ""), ("value:admin.env", "")], Some(&map(&[("A", "1")])));
        assert_eq!(cleared, Ok(map(&[]).kind), "all rows cleared: an empty map");
        assert_eq!(parsed(&f, &[("key:admin.env", ""), ("value:admin.env", "")], None), Ok(None));
    }

    #[test]
    fn a_value_without_a_name_and_a_repeated_name_are_errors_by_row() {
        let f = object(false, "");
        let got = parsed(
            &f,
            &[
                ("key:admin.env", "A"),
                ("value:admin.env", "1"),
                ("key:admin.env", ""),
                ("value:admin.env", "orphan"),
                ("key:admin.env", "A"),
                ("value:admin.env", "2"),
            ],
            None,
        );
        assert_eq!(got, Err("row 2 has a value but no name; row 3 repeats the name of row 1".into()));
        let p =
            post(&[("key:admin.env", "A"), ("value:admin.env", "1"), ("key:admin.env", "A"), ("value:admin.env", "2")]);
        let shown = rows(&f, None, Some((Posted(&p), "admin.env")));
        assert_eq!(shown.iter().map(|r| r.invalid).collect::<Vec<_>>(), [false, true, false, false, false]);
        assert_eq!(shown[1].value, "2", "a plain value is shown again");
    }

    #[test]
    fn a_secret_map_keeps_blank_values_removes_ticked_names_and_never_shows_a_value() {
        let f = object(true, "");
        let saved = map(&[("token", "s3cret"), ("old", "x")]);
        let unchanged = parsed(
            &f,
            &[("key:admin.env", "token"), ("value:admin.env", ""), ("key:admin.env", "old"), ("value:admin.env", "")],
            Some(&saved),
        );
        assert_eq!(unchanged, Ok(None), "nothing changed: not posted, the store keeps it");
        let changed = parsed(
            &f,
            &[
                ("key:admin.env", "token"),
                ("value:admin.env", ""),
                ("key:admin.env", "old"),
                ("value:admin.env", ""),
                ("remove:admin.env", "old"),
                ("key:admin.env", "new"),
                ("value:admin.env", "fresh"),
            ],
            Some(&saved),
        );
        assert_eq!(changed, Ok(map(&[("token", "s3cret"), ("new", "fresh")]).kind));
        let replaced = parsed(&f, &[("key:admin.env", "token"), ("value:admin.env", "next")], Some(&saved));
        assert_eq!(replaced, Ok(map(&[("token", "next"), ("old", "x")]).kind));
        let all_gone = parsed(
            &f,
            &[
                ("key:admin.env", "token"),
                ("value:admin.env", ""),
                ("remove:admin.env", "token"),
                ("remove:admin.env", "old"),
            ],
            Some(&saved),
        );
        assert_eq!(all_gone, Ok(map(&[]).kind));
        let no_value = parsed(&f, &[("key:admin.env", "fresh"), ("value:admin.env", "")], Some(&saved));
        assert_eq!(no_value, Err("row 1 has a name but no value".into()));

        let shown = rows(&f, Some(&saved), None);
        assert_eq!(shown.len(), 2 + EMPTY_ROWS);
        assert!(shown.iter().all(|r| r.value.is_empty()), "{shown:?}");
        assert_eq!((shown[0].key.as_str(), shown[0].saved), ("old", true));
        let p = post(&[("key:admin.env", "token"), ("value:admin.env", "typed"), ("remove:admin.env", "token")]);
        let again = rows(&f, Some(&saved), Some((Posted(&p), "admin.env")));
        assert_eq!((again[0].value.as_str(), again[0].saved, again[0].removed), ("", true, true));
    }
}
