//! Compiles `proto/plugin.proto` (the worker protocol) and `proto/admin.proto` (the admin
//! API) with protox (pure Rust: nobody needs `protoc`), then generates prost types and
//! tonic client/server code from the descriptor set. The descriptor set is also written
//! to OUT_DIR, so prost-reflect can do proto JSON and the admin's reflection service can
//! serve it, and a small `names.rs` maps every generated message of `plugin.proto` to its
//! full protobuf name.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/plugin.proto");
    println!("cargo:rerun-if-changed=proto/admin.proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(["plugin.proto", "admin.proto"], ["proto"])?;
    fs::write(out.join("descriptor_set.bin"), fds.encode_to_vec())?;

    let mut names = String::new();
    for file in fds.file.iter().filter(|f| f.package() == "plugin") {
        for msg in &file.message_type {
            // The contract has no nested messages apart from map entries, which prost
            // does not generate as types.
            names.push_str(&format!(
                "impl crate::ProtoName for crate::pb::{} {{ const FULL_NAME: &'static str = \"plugin.{}\"; }}\n",
                msg.name(),
                msg.name()
            ));
        }
    }
    fs::write(out.join("names.rs"), names)?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
