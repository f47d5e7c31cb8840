#![allow(dead_code)] // each target uses its part
// Shared by the fuzz targets: one input is several datagrams, so that the
// fuzzer can send a template in one and data in the next, which is where
// stateful decoders break.

/// Splits the input at each `0xAA 0x55` pair (at most 16 datagrams).
pub fn datagrams(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at + 1 < data.len() && out.len() < 15 {
        if data[at] == 0xAA && data[at + 1] == 0x55 {
            out.push(&data[start..at]);
            start = at + 2;
            at += 2;
        } else {
            at += 1;
        }
    }
    out.push(&data[start..]);
    out
}

/// Feeds `data` to one NetFlow/IPFIX decoder as datagrams whose version
/// field says `version`: it must count and drop whatever it cannot decode,
/// never panic; the batch must stay rectangular, and the decoder's state
/// must survive a snapshot and restore.
pub fn fuzz_netflow(data: &[u8], version: u16) {
    use aiwan_collectors::netflow::{NetflowDecoder, NetflowOptions};
    use aiwan_collectors::record::FlowBatch;

    let mut decoder = NetflowDecoder::new(NetflowOptions {
        pending_max_bytes: 4096,
        ..NetflowOptions::default()
    });
    let mut batch = FlowBatch::default();
    let source = "192.0.2.1:2055".parse().expect("literal");
    for (n, datagram) in datagrams(data).into_iter().enumerate() {
        let mut bytes = datagram.to_vec();
        if bytes.len() >= 2 {
            bytes[..2].copy_from_slice(&version.to_be_bytes());
        }
        let _ = decoder.decode(source, n as i64 * 1000, &bytes, &mut batch);
    }
    decoder.flush_sequences();
    let rows = batch.len();
    assert!(
        batch.bytes.len() == rows && batch.src_addr.len() == rows && batch.sampling_rate.len() == rows
    );
    let mut restored = NetflowDecoder::default();
    restored.restore(&decoder.snapshot());
}
