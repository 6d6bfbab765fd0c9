//! Hand-written hashing: every generated value is a pure function of its
//! coordinates (seed, source, entity, date, record index, field), so pages
//! come out byte-identical whatever order or concurrency they are asked in.

/// The splitmix64 finaliser: a fast, well-mixed 64-bit permutation.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combines a hash with one more value.
#[inline]
pub(crate) fn combine(hash: u64, value: u64) -> u64 {
    mix(hash ^ value.wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// FNV-1a of a string (the catalog's), then mixed: stable across
/// platforms and builds.
pub(crate) fn hash_str(s: &str) -> u64 {
    mix(syncvet_model::fnv1a(s.as_bytes()))
}

/// A uniform fraction in [0, 1) from a hash.
#[inline]
pub(crate) fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A deterministic stream of draws (splitmix64 sequence).
#[derive(Debug, Clone)]
pub(crate) struct Draws(u64);

impl Draws {
    pub(crate) fn new(seed: u64) -> Draws {
        Draws(seed)
    }

    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in 0..n (n > 0), by multiply-shift (no division).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// One element of a non-empty slice.
    #[inline]
    pub(crate) fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_roughly_uniform() {
        let a: Vec<u64> = {
            let mut d = Draws::new(9);
            (0..5).map(|_| d.next()).collect()
        };
        let b: Vec<u64> = {
            let mut d = Draws::new(9);
            (0..5).map(|_| d.next()).collect()
        };
        assert_eq!(a, b);
        let mut d = Draws::new(1);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[d.below(10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{buckets:?}"
        );
        let hits = (0..100_000).filter(|_| unit(d.next()) < 0.1).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }

    #[test]
    fn string_hashes_differ_and_are_stable() {
        assert_ne!(hash_str("p-0001"), hash_str("p-0002"));
        assert_eq!(hash_str("patients"), hash_str("patients"));
    }
}
