//! What the API-key check costs per request: the key table's read lock, a
//! SHA-256 of the presented token and a constant-time comparison with every
//! stored key, for 1, 10 and 100 keys, a known and an unknown token.
//! Run: `cargo bench --bench auth`.

// A benchmark reports by printing its table.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use hearth::access::{KeyStore, Secret};

fn main() {
    const ROUNDS: u32 = 200_000;
    println!("keys  token    ns/check");
    for n in [1usize, 10, 100] {
        let admin: Vec<Secret> = (0..n)
            .map(|i| Secret(format!("admin-key-{i:04}-0123456789abcdef")))
            .collect();
        let store = KeyStore::new(&admin, &[], None).expect("keys");
        let last = format!("admin-key-{:04}-0123456789abcdef", n - 1);
        for (what, token) in [
            ("known", last.as_str()),
            ("unknown", "no-such-key-0123456789abcdef"),
        ] {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                black_box(store.current().role_of(black_box(token)));
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
            println!("{n:>4}  {what:<7}  {ns:>8.0}");
        }
    }
}
