//! Which partition a keyed message goes to: Kafka's default partitioner
//! (murmur2 of the key bytes, made positive, modulo the partition count), so
//! that recordhook and any Java or librdkafka producer (`murmur2_random`)
//! put the same key on the same partition.

/// The partition for `key` in a topic of `count` partitions (at least 1).
pub fn for_key(key: &[u8], count: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED);
    // Kafka's `toPositive`: the sign bit cleared, not the absolute value.
    let positive = hash & 0x7fff_ffff;
    let count = u32::try_from(count.max(1)).unwrap_or(1);
    i32::try_from(positive % count).unwrap_or(0)
}

/// A partition for a message without a key: any, chosen at random so that
/// unkeyed records spread over the topic.
pub fn for_no_key(count: i32) -> i32 {
    fastrand::i32(0..count.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes Kafka's own test suite (`UtilsTest.testMurmur2`) checks.
    #[test]
    fn the_hash_is_kafkas_murmur2() {
        let cases: [(&[u8], i32); 3] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED);
            assert_eq!(hash.cast_signed(), expected, "{key:?}");
        }
    }

    #[test]
    fn a_key_always_lands_on_the_same_partition_within_the_count() {
        for count in [1, 2, 3, 7, 64] {
            for key in ["a", "room-42", "5285890812345678901"] {
                let partition = for_key(key.as_bytes(), count);
                assert!((0..count).contains(&partition));
                assert_eq!(partition, for_key(key.as_bytes(), count));
            }
        }
        // -973932308 & 0x7fffffff = 1173551340: 0 mod 4, 0 mod 3, 3 mod 7.
        assert_eq!(for_key(b"21", 4), 0);
        assert_eq!(for_key(b"21", 3), 0);
        assert_eq!(for_key(b"21", 7), 3);
        for _ in 0..100 {
            assert!((0..3).contains(&for_no_key(3)));
        }
        assert_eq!(for_no_key(1), 0);
    }
}
