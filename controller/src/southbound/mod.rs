//! The controller's southbound side: plans made into each router's kernel
//! state (`render`), and the drivers that push it: the router agents over
//! gRPC, or the simulated dataplane (`simulated`), behind one trait.

pub mod agents;
pub mod discovery;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod simulated;
pub mod streams;

use crate::agent::{ApplyReport, InterfaceReport, NodeState, Version};

/// Why a push to a node did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The node's agent did not answer (down, restarting, unreachable):
    /// retried with backoff; the plan is partial meanwhile.
    #[error("node {node}: agent unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    /// The agent answered and refused the state: a plan that cannot go on
    /// this node, a reason to roll back.
    #[error("node {node}: refused: {reason}")]
    Refused { node: String, reason: String },
    /// The node holds a newer controller's state (a higher epoch): this
    /// controller has been taken over there. Not a reason to roll back.
    #[error("node {node}: taken over by another controller: {reason}")]
    Superseded { node: String, reason: String },
}

/// A node's state as its agent holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The epoch and generation of the desired state the agent last
    /// applied; zeros when it holds none (new, or restarted).
    pub version: Version,
    /// aiwan's objects in the node's kernel.
    pub state: NodeState,
    /// The node's interfaces, addresses and neighbours, for
    /// [`discovery`].
    pub interfaces: Vec<InterfaceReport>,
}

/// What pushes kernel state to nodes.
#[tonic::async_trait]
pub trait Driver: Send + Sync {
    /// For logs and plan status.
    fn name(&self) -> &'static str;

    /// Makes the node's aiwan-owned state equal `state`, remembering
    /// `version` (taken by [`crate::agent::accept`]'s rule).
    async fn apply(
        &self,
        node: &str,
        version: Version,
        state: &NodeState,
    ) -> Result<ApplyReport, DriverError>;

    /// What the node holds now.
    async fn observe(&self, node: &str) -> Result<Observed, DriverError>;
}
