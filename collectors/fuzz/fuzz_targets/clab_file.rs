#![no_main]
//! containerlab topology files on arbitrary text: a topology or an error
//! naming what is wrong, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    drop(aiwan_planner::formats::clab::parse_clab(&text));
});
