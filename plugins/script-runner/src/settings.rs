//! The admin's saved values for `script`, read into typed settings, and the job's
//! parameters read into environment variables.

use std::{path::PathBuf, time::Duration};

use worker_sdk::{HandlerError, pb, pb::config_value::Kind, values};

/// The descriptor's defaults, shared by the form and the readers.
pub mod defaults {
    use std::time::Duration;

    pub const NAME: &str = "hello";
    pub const INTERPRETER: &str = "sh";
    pub const SOURCE: &str = "inline";
    pub const TIMEOUT: Duration = Duration::from_secs(300);
    pub const OUTPUT_LIMIT_BYTES: i64 = 64 * 1024;
    pub const MIN_OUTPUT_LIMIT_BYTES: i64 = 256;
    pub const MAX_OUTPUT_LIMIT_BYTES: i64 = 16 * 1024 * 1024;
}

/// The program that interprets the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    Sh,
    Bash,
    Python3,
}

impl Interpreter {
    pub fn parse(name: &str) -> Result<Interpreter, HandlerError> {
        match name {
            "sh" => Ok(Interpreter::Sh),
            "bash" => Ok(Interpreter::Bash),
            "python3" => Ok(Interpreter::Python3),
            other => Err(format!("unknown interpreter {other:?}; use sh, bash or python3").into()),
        }
    }

    pub fn program(&self) -> &'static str {
        match self {
            Interpreter::Sh => "sh",
            Interpreter::Bash => "bash",
            Interpreter::Python3 => "python3",
        }
    }
}

/// Where the script's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Written in the form.
    Inline(String),
    /// A file below the worker's scripts directory.
    File(PathBuf),
}

/// One configured script.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptSettings {
    pub name: String,
    pub interpreter: Interpreter,
    pub source: Source,
    /// Operator-defined environment variables (become job parameters at detection).
    pub env: Vec<(String, String)>,
    /// The secrets as the JSON document the script reads from stdin.
    pub secrets_json: String,
    pub timeout: Duration,
    pub output_limit: usize,
}

impl ScriptSettings {
    /// Reads the settings; `None` when no script is configured yet.
    pub fn from_values(v: &values::Values) -> Result<Option<ScriptSettings>, HandlerError> {
        let name = values::string_or(v, "name", defaults::NAME.into())?;
        if !valid_name(&name) {
            return Err(format!("script name {name:?} must be 1-64 letters, digits, '_', '.' or '-'").into());
        }
        let source = match values::string_or(v, "source", defaults::SOURCE.into())?.as_str() {
            "inline" => {
                let script = values::string_or(v, "script", String::new())?;
                if script.trim().is_empty() {
                    return Ok(None);
                }
                Source::Inline(script)
            }
            "file" => {
                let file = values::string_or(v, "file", String::new())?;
                if file.trim().is_empty() {
                    return Ok(None);
                }
                Source::File(PathBuf::from(file.trim()))
            }
            other => return Err(format!("unknown script source {other:?}; use inline or file").into()),
        };
        let env = match values::opt_map(v, "env")? {
            Some(map) => env_vars(&map)?,
            None => Vec::new(),
        };
        let secrets = values::opt_map(v, "secrets")?.unwrap_or_default();
        let limit = values::i64_or(v, "output_limit_bytes", defaults::OUTPUT_LIMIT_BYTES)?
            .clamp(defaults::MIN_OUTPUT_LIMIT_BYTES, defaults::MAX_OUTPUT_LIMIT_BYTES);
        Ok(Some(ScriptSettings {
            name,
            interpreter: Interpreter::parse(&values::string_or(v, "interpreter", defaults::INTERPRETER.into())?)?,
            source,
            env,
            secrets_json: serde_json::Value::Object(secrets.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
                .to_string(),
            timeout: values::duration_or(v, "timeout", defaults::TIMEOUT)?.max(Duration::from_secs(1)),
            output_limit: limit as usize,
        }))
    }
}

pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Whether `name` may be an environment variable set from a parameter.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("PLUGHOST_")
}

/// Named values as environment variables: names checked, scalars as text, sorted.
pub fn env_vars(map: &values::Values) -> Result<Vec<(String, String)>, HandlerError> {
    let mut vars = Vec::new();
    for (name, value) in map {
        if !valid_env_name(name) {
            return Err(format!(
                "{name:?} cannot be an environment variable: use letters, digits and '_', not starting with a digit or PLUGHOST_"
            )
            .into());
        }
        let text = match &value.kind {
            None => continue,
            Some(Kind::StringValue(s)) => s.clone(),
            Some(Kind::Int64Value(n)) => n.to_string(),
            Some(Kind::DoubleValue(d)) => d.to_string(),
            Some(Kind::BoolValue(b)) => b.to_string(),
            Some(_) => to_json(value).to_string(),
        };
        if text.contains('\0') {
            return Err(format!("the value of {name} contains a NUL byte").into());
        }
        vars.push((name.clone(), text));
    }
    vars.sort();
    Ok(vars)
}

/// A config value as plain JSON (`"text"`, `3`, `{"a": true}`), not proto JSON.
pub fn to_json(value: &pb::ConfigValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.kind {
        None => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::Int64Value(n)) => J::from(*n),
        Some(Kind::DoubleValue(d)) => J::from(*d),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BytesValue(b)) => J::String(String::from_utf8_lossy(b).into_owned()),
        Some(Kind::DurationValue(d)) => J::String(format!("{}s", d.seconds as f64 + d.nanos as f64 / 1e9)),
        Some(Kind::StringList(l)) => J::from(l.values.clone()),
        Some(Kind::Int64List(l)) => J::from(l.values.clone()),
        Some(Kind::DoubleList(l)) => J::from(l.values.clone()),
        Some(Kind::BoolList(l)) => J::from(l.values.clone()),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::MapValue(m)) => J::Object(m.fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_sdk::value;

    #[test]
    fn environment_names_are_checked_and_values_become_text() {
        let map: values::Values =
            [("GREETING".to_string(), value::string("hi")), ("N".to_string(), value::int(3))].into();
        assert_eq!(env_vars(&map).unwrap(), [("GREETING".into(), "hi".into()), ("N".into(), "3".into())]);
        for bad in ["1X", "A-B", "PLUGHOST_JOB_ID", ""] {
            let map: values::Values = [(bad.to_string(), value::string("x"))].into();
            assert!(env_vars(&map).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_become_a_plain_json_object() {
        let v: values::Values = [
            ("script".to_string(), value::string("true")),
            ("secrets".to_string(), value::map([("token", value::string("s3cret")), ("n", value::int(1))])),
        ]
        .into();
        let s = ScriptSettings::from_values(&v).unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&s.secrets_json).unwrap();
        assert_eq!(json, serde_json::json!({"token": "s3cret", "n": 1}));
    }

    #[test]
    fn an_empty_script_means_nothing_is_configured() {
        let v: values::Values = [("script".to_string(), value::string("  "))].into();
        assert_eq!(ScriptSettings::from_values(&v).unwrap(), None);
    }
}
