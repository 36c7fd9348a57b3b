//! Receipt handles: which message, which receive of it, in which queue.
//! A handle is valid only while its receive is the message's latest: the
//! nonce is random per receive, so an old or made-up handle matches
//! nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A decoded receipt handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The queue's incarnation (a queue deleted and created again is new).
    pub incarnation: u64,
    /// The message's offset.
    pub offset: u64,
    /// The receive's nonce.
    pub nonce: u64,
}

impl Receipt {
    /// The handle's text.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.incarnation.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.offset.to_be_bytes());
        bytes[16..].copy_from_slice(&self.nonce.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a handle; `None` when it is not one.
    pub fn decode(text: &str) -> Option<Receipt> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let bytes: [u8; 24] = bytes.try_into().ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(w)
        };
        Some(Receipt {
            incarnation: word(0),
            offset: word(8),
            nonce: word(16),
        })
    }
}

/// A fresh, non-zero nonce.
pub fn nonce() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_junk_is_refused() {
        let r = Receipt {
            incarnation: 1,
            offset: u64::MAX,
            nonce: nonce(),
        };
        assert_eq!(Receipt::decode(&r.encode()), Some(r));
        for junk in ["", "abc", "!!!!", &"A".repeat(40)] {
            assert_eq!(Receipt::decode(junk), None, "{junk}");
        }
    }
}
