//! aiwan's protobuf API: the `aiwan.v1` northbound services, the
//! `aiwan.agent.v1` southbound service of `aiwan agent`, and their generated
//! tonic clients and servers.
//!
//! Only this crate knows protobuf. Conversions between these messages and
//! domain types live at the edges that use both (the controller's services).

/// The northbound API, package `aiwan.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("aiwan.v1");
}

/// Encoded `FileDescriptorSet` of every proto in this crate, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/aiwan_descriptor.bin"));

/// The fully qualified names of the northbound services, as reflection and
/// health report them.
pub const SERVICE_NAMES: &[&str] = &[
    "aiwan.v1.TopologyService",
    "aiwan.v1.IntentService",
    "aiwan.v1.PlanService",
    "aiwan.v1.TelemetryService",
    "aiwan.v1.AdminService",
    "aiwan.v1.EventService",
];

/// The southbound API between the controller and `aiwan agent`.
pub mod agent {
    /// Package `aiwan.agent.v1`.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("aiwan.agent.v1");
    }

    /// Encoded `FileDescriptorSet` of the agent's protos, for the agent's
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/aiwan_agent_descriptor.bin"));

    /// The fully qualified names of the agent's services, as reflection and
    /// health report them.
    pub const SERVICE_NAMES: &[&str] = &["aiwan.agent.v1.AgentService"];
}
