//! A hasher for maps keyed by numbers the admin itself assigns (job ids, attempt numbers)
//! or by hashes it already computed with a keyed hasher: nothing a peer chooses, so a
//! multiply-rotate mix is enough, several times cheaper than the default SipHash on the
//! dispatcher's and the store writer's hot paths. And one for maps keyed by names the
//! admin holds a bounded number of.

use std::collections::HashMap;

/// A `HashMap` keyed by admin-assigned numbers.
pub type IdMap<K, V> = HashMap<K, V, BuildIdHasher>;

/// A `HashMap` keyed by names of which the admin holds a bounded number: job types and
/// worker ids (as many as the registry admits), request ids (which it makes itself).
/// foldhash, seeded at random per process, costs a fraction of SipHash on such short
/// strings, and the dispatcher hashes several per job. Keys that peers choose without a
/// bound (dedupe keys) keep the default SipHash.
pub type NameMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default, Clone, Copy)]
pub struct BuildIdHasher;

impl std::hash::BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        use std::hash::BuildHasher;
        // The low bits pick a bucket: consecutive ids must not share them.
        let low: std::collections::HashSet<u64> = (0..1024i64).map(|i| BuildIdHasher.hash_one(i) >> 54).collect();
        assert!(low.len() > 512, "only {} distinct top-10-bit values for 1024 ids", low.len());
        let mut m: IdMap<i64, i64> = IdMap::default();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert_eq!(m.get(&4321), Some(&8642));
    }
}
