//! aiwan's planner: the topology graph, candidate paths, traffic matrices
//! and their file formats, demand forecasting, and the TE solvers (a
//! reference LP and a fast solver), all evaluated by one function.
//!
//! Architecture invariant: this crate is pure. It never opens a socket,
//! reads the clock or touches the database, and its solvers read no files;
//! the same inputs give the same outputs.

pub mod admission;
pub mod allocation;
pub mod classes;
pub mod eval;
pub mod failures;
pub mod fast;
pub mod forecast;
pub mod formats;
#[cfg(feature = "highs")]
pub mod highs_lp;
pub mod lp;
pub mod network;
pub mod on_demand;
pub mod paths;
pub mod placement;
pub mod scenario;
pub mod schedule;
pub mod topology;
pub mod traffic;

pub use topology::{Link, Node, NodeRole, Site, Topology, TopologyError};
