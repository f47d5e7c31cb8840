//! aiwan's planner: the topology graph and, as the planner issue lands,
//! candidate paths, traffic matrices, forecasting and TE solvers.
//!
//! Architecture invariant: this crate is pure. It never opens a socket, reads
//! the clock or touches the database; the same inputs give the same outputs.

pub mod topology;

pub use topology::{Link, Node, NodeRole, Site, Topology, TopologyError};
