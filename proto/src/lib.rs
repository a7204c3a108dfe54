//! The `plugin.v1` wire contract and the admin API: generated protobuf types, the tonic
//! clients and servers for `plugin.PluginControlService` ([`pb`]) and
//! `plughost.admin.v1.AdminService` ([`admin_pb`]), the descriptor set and pool of both,
//! and proto JSON (snake_case field names) for every message of the contract.
//!
//! The contract is wire-compatible with SeaweedFS's plugin protocol on purpose; see
//! `proto/plugin.proto` for the rules on changing it. `proto/admin.proto` is Plughost's
//! own (the JSON API's reads and commands over gRPC).

pub mod json;

/// Generated types (`pb::WorkerHello`, ...) plus `plugin_control_service_client` and
/// `plugin_control_service_server`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("plugin");

    pub use prost_types::{Duration, Timestamp};
}

/// The generated code of `admin.proto` names the contract's messages by their package
/// path relative to its own (`super::super::super::plugin::JobState`), so the packages
/// are laid out here as protobuf nests them.
mod packages {
    pub use crate::pb as plugin;

    pub mod plughost {
        pub mod admin {
            pub mod v1 {
                #![allow(clippy::all, missing_docs)]
                tonic::include_proto!("plughost.admin.v1");
            }
        }
    }
}

/// Generated types of `plughost.admin.v1` (`admin_pb::Job`, ...) plus
/// `admin_service_client` and `admin_service_server`.
pub use packages::plughost::admin::v1 as admin_pb;

pub use prost_types::{Duration, Timestamp};

/// The protocol version string that workers send in `WorkerHello.protocol_version`.
pub const PROTOCOL_VERSION: &str = "plugin.v1";

/// The encoded `FileDescriptorSet` of `plugin.proto`, `admin.proto` and their imports
/// (what the admin's reflection service serves).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

/// Links a generated message type to its full protobuf name (`plugin.WorkerHello`), so
/// that proto JSON can find its descriptor.
pub trait ProtoName {
    const FULL_NAME: &'static str;
}

include!(concat!(env!("OUT_DIR"), "/names.rs"));

/// The descriptor pool of `plugin.proto` and `admin.proto`, decoded once.
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
