//! The aiwan controller: configuration, persistence, intents and plans, and
//! the northbound gRPC server.

pub mod admission;
/// The router side, its own crate (`aiwan-agent`): the controller uses its
/// state types, conversions and client.
pub use aiwan_agent as agent;
pub mod auth;
pub mod bench_admission;
pub mod bench_api;
pub mod bench_collector;
pub mod bench_flood;
pub mod bench_jobs;
pub mod bench_tui;
pub mod certs;
pub mod client;
pub mod closed_loop;
pub mod collect;
pub mod collective;
pub mod config;
pub mod convert;
pub mod demo;
pub mod events;
pub mod lab_cli;
pub mod lab_run;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod planning;
pub mod schedules;
pub mod server;
pub mod services;
pub mod southbound;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod tidy;
