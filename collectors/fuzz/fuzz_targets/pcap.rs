#![no_main]
//! The pcap reader (used to replay captures) on arbitrary files.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aiwan_collectors::pcap::read_udp_datagrams(data);
});
