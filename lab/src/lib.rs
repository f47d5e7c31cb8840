//! aiwan's lab: containerlab-format topologies, their conversion to the
//! planner's topology, the lab's addressing plan, and the deployer that
//! brings a topology up in network namespaces.
//!
//! Architecture invariant: this crate never touches controller internals;
//! it produces `aiwan_planner` types and the controller converts them.

pub mod addressing;
/// The containerlab reader lives with the planner's other formats.
pub use aiwan_planner::formats::clab;
pub mod deploy;
pub mod scenario;
