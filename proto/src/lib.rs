//! The `plugin.v1` wire contract: generated protobuf types, the tonic client and server
//! for `plugin.PluginControlService`, the descriptor pool, and proto JSON (snake_case
//! field names) for every message.
//!
//! The contract is wire-compatible with SeaweedFS's plugin protocol on purpose; see
//! `proto/plugin.proto` for the rules on changing it.

pub mod json;

/// Generated types (`pb::WorkerHello`, ...) plus `plugin_control_service_client` and
/// `plugin_control_service_server`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("plugin");

    pub use prost_types::{Duration, Timestamp};
}

pub use prost_types::{Duration, Timestamp};

/// The protocol version string that workers send in `WorkerHello.protocol_version`.
pub const PROTOCOL_VERSION: &str = "plugin.v1";

/// The encoded `FileDescriptorSet` of `plugin.proto` and its imports.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugin_descriptor.bin"));

/// Links a generated message type to its full protobuf name (`plugin.WorkerHello`), so
/// that proto JSON can find its descriptor.
pub trait ProtoName {
    const FULL_NAME: &'static str;
}

include!(concat!(env!("OUT_DIR"), "/names.rs"));

/// The descriptor pool of `plugin.proto`, decoded once.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("the descriptor set embedded at build time decodes")
    })
}

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    std::time::SystemTime::now().into()
}
