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
/// API clients a stable shape.
pub fn to_value_with<M: Message + ProtoName>(msg: &M, emit_defaults: bool) -> Result<serde_json::Value, JsonError> {
    let dynamic = dynamic(msg)?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options(emit_defaults))
        .map_err(|source| JsonError::Invalid { message: M::FULL_NAME, source })
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
