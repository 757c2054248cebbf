//! Keys and values the workloads write. Keys are numbers in the key space written into
//! `--key-size` bytes (as etcd's benchmark does), so `--key-space-size` bounds the distinct keys.
//! Watch workloads put the put's sequence number in the first 8 bytes of the value, so that a
//! watcher can tell which put an event belongs to without any shared state on the hot path.

/// Bytes of the value taken by the sequence number.
pub const SEQ_LEN: usize = 8;

/// Key number `n` in `size` bytes: little-endian, so that the leading bytes vary first, padded
/// with zeros (or cut when `size` < 8).
pub fn key(n: u64, size: usize) -> Vec<u8> {
    let mut k = vec![0u8; size];
    for (dst, src) in k.iter_mut().zip(n.to_le_bytes()) {
        *dst = src;
    }
    k
}

/// A value of `size` bytes (at least [`SEQ_LEN`]) that starts with `seq`, big-endian.
pub fn value_with_seq(seq: u64, size: usize) -> Vec<u8> {
    let mut v = vec![b'v'; size.max(SEQ_LEN)];
    for (dst, src) in v.iter_mut().zip(seq.to_be_bytes()) {
        *dst = src;
    }
    v
}

/// The sequence number a value written by [`value_with_seq`] carries.
pub fn seq_of(value: &[u8]) -> Option<u64> {
    let head: [u8; SEQ_LEN] = value.get(..SEQ_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// A random printable key of `size` bytes, under a prefix that says who wrote it.
pub fn random_key(prefix: &str, size: usize) -> Vec<u8> {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let mut k = prefix.as_bytes().to_vec();
    let rest = size.saturating_sub(k.len()).max(1);
    k.extend(rand::thread_rng().sample_iter(&Alphanumeric).take(rest));
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_within_the_space_and_sized() {
        let a = key(1, 8);
        let b = key(256, 8);
        assert_ne!(a, b);
        assert_eq!(a.len(), 8);
        assert_eq!(key(3, 2), vec![3, 0]);
    }

    #[test]
    fn seq_round_trips_and_short_values_have_none() {
        let v = value_with_seq(123_456_789, 32);
        assert_eq!(v.len(), 32);
        assert_eq!(seq_of(&v), Some(123_456_789));
        assert_eq!(value_with_seq(1, 2).len(), SEQ_LEN);
        assert_eq!(seq_of(b"short"), None);
    }

    #[test]
    fn random_keys_keep_the_prefix_and_differ() {
        let a = random_key("bench/", 32);
        let b = random_key("bench/", 32);
        assert!(a.starts_with(b"bench/"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
