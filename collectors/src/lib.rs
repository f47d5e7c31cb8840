//! aiwan's telemetry collectors: NetFlow v5/v9, IPFIX and sFlow decoders,
//! their UDP listeners, and the Polars telemetry store.
//!
//! Architecture invariant: only this crate knows Polars. Decoders are
//! sans-I/O (bytes and a receive time in, records and counters out), and a
//! malformed datagram is counted and dropped, never a panic.

pub mod error;
pub mod listener;
pub mod netflow;
pub mod pcap;
#[cfg(feature = "store")]
pub mod pipeline;
pub mod record;
pub mod sequence;
pub mod sflow;
pub mod stats;
#[cfg(feature = "store")]
pub mod store;
