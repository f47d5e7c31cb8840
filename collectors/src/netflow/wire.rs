//! Big-endian reads that return `None` instead of panicking when the bytes
//! run out. Every read of untrusted input in the NetFlow decoders goes
//! through here or through a slice whose length was checked first.

pub fn u8_at(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

pub fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    let slice: [u8; 2] = bytes.get(at..end)?.try_into().ok()?;
    Some(u16::from_be_bytes(slice))
}

pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let slice: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(slice))
}

/// An unsigned integer of 1 to 8 bytes (IPFIX reduced-size encoding: a
/// counter defined as 8 bytes may be sent in 4). Longer fields keep their
/// last 8 bytes, as a value that large cannot be a count anyway.
pub fn uint(bytes: &[u8]) -> u64 {
    // The widths templates use, read directly (this is the decoder's
    // innermost loop); other widths are folded byte by byte.
    match *bytes {
        [a] => return u64::from(a),
        [a, b] => return u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => return u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => return u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => {}
    }
    let tail = bytes.len().saturating_sub(8);
    bytes
        .get(tail..)
        .unwrap_or_default()
        .iter()
        .fold(0u64, |value, &byte| (value << 8) | u64::from(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let bytes = [1, 2, 3, 4, 5];
        assert_eq!(u16_at(&bytes, 3), Some(0x0405));
        assert_eq!(u16_at(&bytes, 4), None);
        assert_eq!(u32_at(&bytes, 1), Some(0x02030405));
        assert_eq!(u32_at(&bytes, 2), None);
        assert_eq!(u32_at(&bytes, usize::MAX), None);
        assert_eq!(u8_at(&bytes, 5), None);
    }

    #[test]
    fn uint_of_any_width() {
        assert_eq!(uint(&[]), 0);
        assert_eq!(uint(&[0x12]), 0x12);
        assert_eq!(uint(&[0, 0, 1, 0]), 256);
        assert_eq!(uint(&[1, 2, 3, 4, 5, 6, 7, 8]), 0x0102030405060708);
        assert_eq!(uint(&[9, 1, 2, 3, 4, 5, 6, 7, 8]), 0x0102030405060708);
        assert_eq!(uint(&[1, 2, 3]), 0x010203);
        assert_eq!(uint(&[0xff, 0, 0, 0, 1]), 0xff_0000_0001);
    }
}
