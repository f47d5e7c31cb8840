//! Compiles the protos with protox (pure Rust, no `protoc`), writes the
//! encoded descriptor sets for server reflection, and generates tonic code.
//!
//! The northbound (`aiwan.v1`) and the agent's southbound (`aiwan.agent.v1`)
//! are compiled apart, so each server's reflection describes only the
//! services it serves.

use std::path::PathBuf;

use protox::prost::Message;

const PROTOS: &[&str] = &[
    "aiwan/v1/topology.proto",
    "aiwan/v1/intent.proto",
    "aiwan/v1/plan.proto",
    "aiwan/v1/telemetry.proto",
    "aiwan/v1/admin.proto",
    "aiwan/v1/event.proto",
];

const AGENT_PROTOS: &[&str] = &["aiwan/agent/v1/agent.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out_dir.join("aiwan_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    let agent = protox::compile(AGENT_PROTOS, ["proto"])?;
    std::fs::write(
        out_dir.join("aiwan_agent_descriptor.bin"),
        agent.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(agent)?;
    Ok(())
}
