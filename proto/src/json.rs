//! Proto JSON for any message of the contract: snake_case field names, enums by name,
//! well-known types in their canonical JSON forms. Decoding rejects unknown fields, so a
//! typo in a hand-edited file or an API body is an error rather than a silent default.

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::{ProtoName, descriptor_pool};

/// Why a message could not be turned into or read from proto JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("message {0} is not in the plugin descriptor pool")]
    UnknownMessage(&'static str),
    #[error("invalid proto JSON for {message}: {source}")]
    Invalid {
        message: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("proto JSON for {message} does not fit the message: {source}")]
    Transcode {
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

fn dynamic<M: Message + ProtoName>(msg: &M) -> Result<DynamicMessage, JsonError> {
    let desc = descriptor_pool().get_message_by_name(M::FULL_NAME).ok_or(JsonError::UnknownMessage(M::FULL_NAME))?;
    let mut dynamic = DynamicMessage::new(desc);
    dynamic.transcode_from(msg).map_err(|source| JsonError::Transcode { message: M::FULL_NAME, source })?;
    Ok(dynamic)
}

fn options(emit_defaults: bool) -> SerializeOptions {
    SerializeOptions::new().use_proto_field_name(true).skip_default_fields(!emit_defaults)
}

/// The message as a JSON value. Fields holding their default value are left out, as
/// proto JSON does by default.
pub fn to_value<M: Message + ProtoName>(msg: &M) -> Result<serde_json::Value, JsonError> {
    to_value_with(msg, false)
}

/// The message as a JSON value; with `emit_defaults` every field is present, which gives
/// API clients a stable shape: scalars at their defaults, and a message field that is not
/// set as `null` (as Go's protojson writes with `EmitUnpopulated`, which SeaweedFS's
/// admin uses).
pub fn to_value_with<M: Message + ProtoName>(msg: &M, emit_defaults: bool) -> Result<serde_json::Value, JsonError> {
    let dynamic = dynamic(msg)?;
    let mut value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options(emit_defaults))
        .map_err(|source| JsonError::Invalid { message: M::FULL_NAME, source })?;
    if emit_defaults {
        null_unset_messages(&mut value, &prost_reflect::ReflectMessage::descriptor(&dynamic));
    }
    Ok(value)
}

/// Adds `null` for every singular message field missing from `value` (a message of type
/// `desc` in proto JSON), at every depth. Well-known types have JSON forms of their own
/// and are left as they are.
fn null_unset_messages(value: &mut serde_json::Value, desc: &prost_reflect::MessageDescriptor) {
    use prost_reflect::Kind;
    let serde_json::Value::Object(fields) = value else { return };
    for field in desc.fields() {
        let Kind::Message(inner) = field.kind() else { continue };
        let own_json = inner.full_name().starts_with("google.protobuf.");
        match fields.get_mut(field.name()) {
            None if !field.is_list() && !field.is_map() => {
                fields.insert(field.name().to_string(), serde_json::Value::Null);
            }
            None => {}
            Some(_) if own_json => {}
            Some(serde_json::Value::Array(items)) => {
                items.iter_mut().for_each(|item| null_unset_messages(item, &inner));
            }
            Some(serde_json::Value::Object(map)) if field.is_map() => {
                if let Kind::Message(entry_value) = inner.map_entry_value_field().kind()
                    && !entry_value.full_name().starts_with("google.protobuf.")
                {
                    map.values_mut().for_each(|v| null_unset_messages(v, &entry_value));
                }
            }
            Some(nested) => null_unset_messages(nested, &inner),
        }
    }
}

/// The message as pretty-printed JSON text (for files meant for humans).
pub fn to_string_pretty<M: Message + ProtoName>(msg: &M) -> Result<String, JsonError> {
    let dynamic = dynamic(msg)?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::pretty(&mut out);
    dynamic
        .serialize_with_options(&mut ser, &options(false))
        .map_err(|source| JsonError::Invalid { message: M::FULL_NAME, source })?;
    out.push(b'\n');
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// Reads a message from proto JSON text. Accepts snake_case and lowerCamelCase names.
pub fn from_str<M: Message + Default + ProtoName>(text: &str) -> Result<M, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let msg = from_deserializer::<M, _>(&mut de)?;
    de.end().map_err(|source| JsonError::Invalid { message: M::FULL_NAME, source })?;
    Ok(msg)
}

/// Reads a message from a JSON value.
pub fn from_value<M: Message + Default + ProtoName>(value: serde_json::Value) -> Result<M, JsonError> {
    from_deserializer::<M, _>(value)
}

fn from_deserializer<'de, M, D>(de: D) -> Result<M, JsonError>
where
    M: Message + Default + ProtoName,
    D: serde::Deserializer<'de, Error = serde_json::Error>,
{
    let desc = descriptor_pool().get_message_by_name(M::FULL_NAME).ok_or(JsonError::UnknownMessage(M::FULL_NAME))?;
    let dynamic = DynamicMessage::deserialize_with_options(desc, de, &DeserializeOptions::new())
        .map_err(|source| JsonError::Invalid { message: M::FULL_NAME, source })?;
    dynamic.transcode_to::<M>().map_err(|source| JsonError::Transcode { message: M::FULL_NAME, source })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::pb;

    #[test]
    fn with_defaults_an_unset_message_field_is_null_at_every_depth_and_reads_back() {
        let descriptor = pb::JobTypeDescriptor {
            job_type: "vacuum".into(),
            admin_config_form: Some(pb::ConfigForm {
                form_id: "admin".into(),
                sections: vec![pb::ConfigSection {
                    section_id: "main".into(),
                    fields: vec![pb::ConfigField { name: "threshold".into(), ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = super::to_value_with(&descriptor, true).unwrap();
        assert_eq!(v["worker_config_form"], json!(null), "{v}");
        assert_eq!(v["admin_runtime_defaults"], json!(null), "{v}");
        let field = &v["admin_config_form"]["sections"][0]["fields"][0];
        assert_eq!(field["min_value"], json!(null), "inside lists too: {field}");
        assert_eq!(field["name"], "threshold");
        let back: pb::JobTypeDescriptor = super::from_value(v).unwrap();
        assert_eq!(back, descriptor, "null reads back as unset");
        let without = super::to_value(&descriptor).unwrap();
        assert!(without.get("worker_config_form").is_none(), "without defaults unset fields are left out");
    }
}
