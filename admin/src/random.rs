//! The admin's one random source: the operating system's (getrandom), with std's randomly
//! keyed SipHash as the fallback should it ever fail. Used for tokens and retry jitter.

use std::hash::{BuildHasher, Hasher};

/// Fills `bytes` with unpredictable bytes.
pub fn fill(bytes: &mut [u8]) {
    if getrandom::getrandom(bytes).is_ok() {
        return;
    }
    // No OS randomness (it essentially never happens): std's RandomState is keyed randomly
    // per process and per instance, which is still unpredictable from outside.
    for chunk in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        let word = h.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// A random 64-bit number.
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

/// `n` random bytes as lowercase hex (`2 * n` characters).
pub fn hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_has_the_asked_length_and_differs_between_calls() {
        let a = super::hex(16);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, super::hex(16));
        assert_ne!(super::u64(), super::u64());
    }
}
