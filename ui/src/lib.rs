//! aiwan's operator dashboard (ratatui).
//!
//! This crate is empty until the TUI issue lands; it reserves its place in
//! the workspace layout. Architecture invariant, from then on: it talks to
//! the controller only through `aiwan-api` and renders one snapshot per
//! frame, in the manner of trippy.
