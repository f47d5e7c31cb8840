//! aiwan's telemetry collectors: NetFlow v5/v9, IPFIX and sFlow decoders,
//! their UDP listeners, and the Polars telemetry store.
//!
//! This crate is empty until the collectors issue lands; it reserves its
//! place in the workspace layout. Architecture invariant, from then on: only
//! this crate knows Polars, and malformed datagrams are counted, never a
//! panic.
