//! Structured results: a JSON object the code writes to `$PLUGHOST_RESULT`, or else
//! prints as the last line of its stdout. Its fields become the job's output values
//! (scalars as scalars, arrays and objects as lists and maps) and its `summary`, when a
//! string, the job's summary. The exit code still decides success.

use std::collections::HashMap;

use worker_sdk::{pb, value};

/// The most bytes of a result document read.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// The most fields taken from a result.
pub const MAX_FIELDS: usize = 100;

/// A result the code reported.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredResult {
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl StructuredResult {
    /// From the result file's text, else the last non-empty stdout line.
    pub fn find(result_file: Option<&str>, last_stdout_line: Option<&str>) -> Option<StructuredResult> {
        let from = |text: &str| -> Option<StructuredResult> {
            if text.len() > MAX_RESULT_BYTES {
                return None;
            }
            match serde_json::from_str::<serde_json::Value>(text.trim()) {
                Ok(serde_json::Value::Object(fields)) => Some(StructuredResult { fields }),
                _ => None,
            }
        };
        match result_file.filter(|t| !t.trim().is_empty()) {
            Some(text) => from(text),
            None => last_stdout_line.map(str::trim).filter(|l| l.starts_with('{')).and_then(from),
        }
    }

    /// The `summary` field, when it is a string.
    pub fn summary(&self) -> Option<String> {
        self.fields.get("summary").and_then(|s| s.as_str()).map(|s| s.chars().take(1000).collect())
    }

    /// The fields as output values, skipping names the runner uses itself and names that
    /// are not plain (1-64 letters, digits, `_`, `.`, `-`); returns the skipped names.
    pub fn into_values(
        self,
        taken: &HashMap<String, pb::ConfigValue>,
    ) -> (Vec<(String, pb::ConfigValue)>, Vec<String>) {
        let mut values = Vec::new();
        let mut skipped = Vec::new();
        for (name, v) in self.fields {
            let plain = crate::definition::valid_name(&name) && !name.starts_with("plughost.");
            if !plain || taken.contains_key(&name) || values.len() >= MAX_FIELDS || name == "summary" {
                if name != "summary" {
                    skipped.push(name.chars().take(64).collect());
                }
                continue;
            }
            if let Some(v) = to_value(&v) {
                values.push((name, v));
            }
        }
        (values, skipped)
    }
}

/// Plain JSON as a config value; `null` is no value.
pub fn to_value(v: &serde_json::Value) -> Option<pb::ConfigValue> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => value::boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => value::int(i),
            None => value::double(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => value::string(s.clone()),
        J::Array(items) => value::list(items.iter().filter_map(to_value)),
        J::Object(map) => value::map(map.iter().filter_map(|(k, v)| to_value(v).map(|v| (k.clone(), v)))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_file_wins_over_the_last_line() {
        let r = StructuredResult::find(Some(r#"{"a": 1}"#), Some(r#"{"b": 2}"#)).unwrap();
        assert!(r.fields.contains_key("a"));
        let r = StructuredResult::find(None, Some(r#"  {"b": 2, "summary": "ok"}"#)).unwrap();
        assert_eq!(r.summary().as_deref(), Some("ok"));
        assert_eq!(StructuredResult::find(None, Some("done")), None);
        assert_eq!(StructuredResult::find(None, Some("[1, 2]")), None);
    }

    #[test]
    fn fields_become_values_except_the_runners_own_and_odd_names() {
        let r = StructuredResult::find(None, Some(r#"{"rows": 3, "ratio": 0.5, "ok": true, "tags": ["a"], "exit_code": 9, "bad name": 1, "summary": "s"}"#)).unwrap();
        let taken: HashMap<String, pb::ConfigValue> = [("exit_code".to_string(), value::int(0))].into();
        let (values, skipped) = r.into_values(&taken);
        let names: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&"rows") && names.contains(&"ratio") && names.contains(&"ok") && names.contains(&"tags")
        );
        assert!(skipped.contains(&"exit_code".to_string()) && skipped.contains(&"bad name".to_string()));
    }
}
