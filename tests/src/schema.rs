//! Checks a JSON value against a schema of an OpenAPI 3.1 document: `$ref`s into
//! `components/schemas`, `type` (one or a list, `null` included), `required`,
//! `properties`, `additionalProperties`, `items`, `enum`, `oneOf`, `anyOf` and `allOf`.
//! Enough to tell whether an answer has the shape its document promises.

use serde_json::Value;

/// Whether `value` fits `schema`; the error names the place and what is wrong.
pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/components/schemas/").ok_or_else(|| format!("{at}: reference {r}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: unresolved reference {r}"));
        }
        return check(doc, target, value, &format!("{at}<{name}>"));
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, value, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = options.iter().filter_map(|s| check(doc, s, value, at).err()).collect();
            if errors.len() == options.len() {
                return Err(format!("{at}: fits none of {key}: {}", errors.join("; ")));
            }
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.is_empty() && !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {} is not {types:?}", short(value)));
        }
    }
    if let Value::Object(map) = value {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    return Err(format!("{at}: required field {r} is missing in {}", short(value)));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (k, v) in map {
            match properties.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, v, &format!("{at}.{k}"))?,
                None => {
                    if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        check(doc, extra, v, &format!("{at}.{k}"))?;
                    }
                }
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(doc, s, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 { format!("{}...", s.chars().take(200).collect::<String>()) } else { s }
}

/// The schema of an operation's answer with `status` as JSON.
pub fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let mut response = &doc["paths"][path][method]["responses"][status.to_string()];
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = &doc["components"]["responses"][r.rsplit('/').next().unwrap()];
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{method} {path} documents no JSON answer for {status}");
    schema
}
