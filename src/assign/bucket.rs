//! Monotone bucketing: a client id maps to one of [`BUCKETS`] buckets, and the
//! groups that take new clients own consecutive slices of that range in config
//! order, in proportion to their weights.

use sha2::{Digest, Sha256};

use super::cookie::ClientId;

/// Size of the bucket space. 10 000 buckets = 0.01 % resolution.
pub const BUCKETS: u32 = 10_000;

/// The bucket of a client id. The id is random (or a SHA-256 output), so its
/// first eight bytes are uniform and the modulo bias is below 1e-15.
pub fn bucket_of(id: &ClientId) -> u32 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// A client id derived from a request key (a header value or the client IP), the
/// same on every replica because nothing in it is per-process.
pub fn client_id_from_key(key: &[u8]) -> ClientId {
    let digest = Sha256::new()
        .chain_update(b"switchyard bucket key\0")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Slices of the bucket space, precomputed when a snapshot is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTable {
    /// `(end, group index)`, ascending by `end`; the last `end` is [`BUCKETS`].
    slices: Vec<(u32, usize)>,
}

impl BucketTable {
    /// Builds the table from `(group index, weight)` of the groups that take new
    /// clients, in config order. Groups with weight 0 get no slice.
    pub fn new(weights: impl IntoIterator<Item = (usize, u32)>) -> Self {
        let live: Vec<(usize, u32)> = weights.into_iter().filter(|(_, w)| *w > 0).collect();
        let total: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut slices = Vec::with_capacity(live.len());
        let mut cumulative = 0u64;
        for (i, (group, w)) in live.iter().enumerate() {
            cumulative += u64::from(*w);
            // Each boundary depends only on the weights before it and the total,
            // so growing the last group only moves boundaries down: nobody leaves it.
            let end = if i + 1 == live.len() {
                BUCKETS
            } else {
                (cumulative * u64::from(BUCKETS) / total) as u32
            };
            slices.push((end, *group));
        }
        Self { slices }
    }

    /// The group that owns `bucket`, or `None` when no group takes new clients.
    pub fn group_of(&self, bucket: u32) -> Option<usize> {
        self.slices
            .iter()
            .find(|(end, _)| bucket < *end)
            .map(|(_, g)| *g)
    }

    /// How many buckets each group index owns.
    pub fn buckets_of(&self, group: usize) -> u32 {
        let mut start = 0;
        let mut n = 0;
        for (end, g) in &self.slices {
            if *g == group {
                n += end - start;
            }
            start = *end;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_weights_exactly() {
        let t = BucketTable::new([(0, 90), (1, 10)]);
        assert_eq!(t.buckets_of(0), 9_000);
        assert_eq!(t.buckets_of(1), 1_000);
        let t = BucketTable::new([(0, 0), (1, 100)]);
        assert_eq!(t.buckets_of(0), 0);
        assert_eq!(t.buckets_of(1), BUCKETS);
        assert!((0..BUCKETS).all(|b| t.group_of(b) == Some(1)));
        let t = BucketTable::new([(0, 1), (1, 1), (2, 1)]);
        assert_eq!(t.buckets_of(0) + t.buckets_of(1) + t.buckets_of(2), BUCKETS);
    }

    #[test]
    fn empty_table_assigns_nobody() {
        let t = BucketTable::new([(0, 0)]);
        assert_eq!(t.group_of(0), None);
    }

    #[test]
    fn raising_the_last_group_only_moves_clients_into_it() {
        let ids: Vec<ClientId> = (0u32..10_000)
            .map(|i| client_id_from_key(&i.to_be_bytes()))
            .collect();
        for (before, after) in [(10, 30), (1, 2), (30, 100), (50, 99)] {
            let old = BucketTable::new([(0, 100 - before), (1, before)]);
            let new = BucketTable::new([(0, 100 - after), (1, after)]);
            let mut moved_in = 0;
            for id in &ids {
                let b = bucket_of(id);
                let (o, n) = (old.group_of(b), new.group_of(b));
                assert!(
                    !(o == Some(1) && n == Some(0)),
                    "a green client went back to blue"
                );
                moved_in += usize::from(o == Some(0) && n == Some(1));
            }
            assert!(moved_in > 0, "{before} -> {after} moved nobody");
        }
        // The same holds when the canary grows while the stable weight stays put.
        let old = BucketTable::new([(0, 90), (1, 10)]);
        let new = BucketTable::new([(0, 90), (1, 30)]);
        for id in &ids {
            let b = bucket_of(id);
            assert!(!(old.group_of(b) == Some(1) && new.group_of(b) == Some(0)));
        }
    }
}
