//! Identifiers and the wall clock as the controller stamps them.

/// A random 25-character ID (Swarm's shape), base 36.
pub fn new_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A non-zero random raft ID.
pub fn new_raft_id() -> u64 {
    loop {
        let id: u64 = rand::random::<u64>() >> 1;
        if id != 0 {
            return id;
        }
    }
}

/// Milliseconds since the Unix epoch (the reconciler's clock).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
