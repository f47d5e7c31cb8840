#![no_main]
//! sFlow v5 decoder on arbitrary datagrams (version field forced to 5):
//! counted and dropped when broken, never a panic.

use aiwan_collectors::record::FlowBatch;
use aiwan_collectors::sflow::{SflowDecoder, SflowOptions};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let mut decoder = SflowDecoder::new(SflowOptions {
        key_by_source_port: false,
        ..SflowOptions::default()
    });
    let mut batch = FlowBatch::default();
    let mut counters = Vec::new();
    let source = "192.0.2.1:6343".parse().expect("literal");
    for (n, datagram) in common::datagrams(data).into_iter().enumerate() {
        let mut bytes = datagram.to_vec();
        if bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&5u32.to_be_bytes());
        }
        let _ = decoder.decode(source, n as i64 * 1000, &bytes, &mut batch, &mut counters);
    }
    decoder.flush_sequences();
    assert!(batch.bytes.len() == batch.len());
});
