//! Why a datagram, or part of one, could not be decoded. Every variant
//! names what was wrong, so the counter that counts it can be explained.

/// A decode failure. Decoders count it against the exporter and drop what
/// they could not read; the rest of the datagram is kept where the format
/// allows (a bad set in an IPFIX message does not lose the good ones).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {what}: needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("unsupported version {version} (expected {expected})")]
    UnsupportedVersion {
        version: u32,
        expected: &'static str,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl DecodeError {
    pub fn truncated(what: &'static str, needed: usize, available: usize) -> DecodeError {
        DecodeError::Truncated {
            what,
            needed,
            available,
        }
    }

    pub fn invalid(what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
