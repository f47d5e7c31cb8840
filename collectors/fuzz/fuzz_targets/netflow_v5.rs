#![no_main]
//! The NetFlow/IPFIX decoder on NetFlow v5 datagrams (see common::fuzz_netflow).

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| common::fuzz_netflow(data, 5));
