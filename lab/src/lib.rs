//! aiwan's lab: containerlab-format topologies and their conversion to the
//! planner's topology. The network-namespace deployer arrives with the
//! southbound issue.
//!
//! Architecture invariant: this crate never touches controller internals;
//! it produces `aiwan_planner` types and the controller converts them.

pub mod clab;
