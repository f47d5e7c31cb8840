//! `aiwan-agent`, the router side: programs one Linux router (in the lab,
//! one network namespace) over rtnetlink, never by running `ip` or `tc`.
//!
//! - [`state`]: the forwarding state as plain data ([`NodeState`]: weighted
//!   multipath routes, SRv6 policies and local SIDs, flow rules, rate
//!   limits), its validation, and aiwan's ownership markers
//!   ([`ROUTE_PROTOCOL`], [`RULE_PRIORITY_RANGE`], [`TABLE_RANGE`],
//!   [`QDISC_MAJOR`]).
//! - [`messages`] and [`tc`]: pure functions between domain objects and
//!   rtnetlink messages, both ways, tested byte for byte against what `ip`
//!   and `tc` send.
//! - [`kernel`]: [`Kernel`], which observes the node's state, applies a
//!   desired one (diff, ordered make-before-break, pipelined requests),
//!   purges aiwan's objects and reads interface counters.
//! - [`monitor`]: [`Monitor`], which reports drift (aiwan's objects changed
//!   or deleted by someone else).
//! - [`service`]: the gRPC service `aiwan.agent.v1.AgentService` over a
//!   [`Kernel`] (desired state and generation, drift repair, counter and
//!   drift streams) and its start-up, what `aiwan agent` runs;
//!   [`convert`]: its messages to and from [`NodeState`] and the rest;
//!   [`client`]: the controller's connection to an agent.
//! - [`bench`]: `aiwan bench push`, the route push rate through an agent.
//!
//! Start-up, in the manner of holo: create the [`Monitor`] first (subscribe
//! before the first dump), then either [`Kernel::purge`] the leftovers of a
//! previous run or adopt them by applying the desired state at once (apply
//! leaves what already matches untouched), then apply again on every plan
//! and every drift event.
//!
//! ```no_run
//! # async fn agent(desired: aiwan_agent::NodeState) -> Result<(), aiwan_agent::KernelError> {
//! use aiwan_agent::Kernel;
//! let kernel = Kernel::new()?;
//! let mut monitor = kernel.monitor()?;
//! let report = kernel.apply(&desired).await?;
//! println!("{report:?}");
//! while let Some(event) = monitor.next().await {
//!     println!("drift: {event}");
//!     kernel.apply(&desired).await?;
//! }
//! # Ok(()) }
//! ```

pub mod bench;
pub mod cli;
pub mod client;
pub mod convert;
pub mod diff;
pub mod inventory;
pub mod kernel;
pub mod messages;
pub mod monitor;
pub mod service;
pub mod state;
pub mod tc;
pub mod version;

#[cfg(test)]
mod lab_tests;

pub use client::{AgentClient, AgentClientError, ClientTls};
pub use inventory::InterfaceReport;
pub use kernel::{ApplyReport, InterfaceStats, Kernel, KernelError, Snapshot};
pub use messages::{Interfaces, MessageError};
pub use monitor::{DriftEvent, DriftKind, Monitor};
pub use service::{AgentError, AgentOptions, Listen, RunningAgent, ServerTls};
pub use state::{
    ClassLimit, Family, FlowRule, LocalSid, MAIN_TABLE, NextHop, NodeState, QDISC_MAJOR,
    ROUTE_PROTOCOL, RULE_PRIORITY_RANGE, RateLimit, Srv6Action, Srv6Policy, StateError,
    TABLE_RANGE, UcmpRoute, weights_from_ratios,
};
pub use version::{Refusal, Version, accept};
