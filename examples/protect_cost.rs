//! What `ProtectedStore` adds to each operation: the encrypt cost of `store` and the decrypt
//! cost of `get_by_hash`, for 600-byte and 16 KiB parameters.
//!
//! Both stores wrap an inner store that does no work (it keeps one request and hands back
//! a copy), so the difference between protected and plain is the decorator's own cost:
//! input checks, sealing or opening, base64. Each operation is timed on its own; the
//! median of many runs is reported.
//!
//! ```text
//! cargo run --release --example protect_cost
//! ```

use chrono::{Duration, Utc};
use par_store::{
    protect::{envelope_len, KeyRing, ProtectionKey},
    ProtectedStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore, StoreError,
};
use std::hint::black_box;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Keeps the last request stored and returns a copy of it for any hash.
#[derive(Default)]
struct OneSlot(Mutex<Option<PushedAuthorizationRequest>>);

#[async_trait::async_trait]
impl PushedAuthorizationRequestStore for OneSlot {
    async fn store(&self, request: &PushedAuthorizationRequest) -> Result<(), StoreError> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(request.clone());
        Ok(())
    }

    async fn consume_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        self.get_by_hash(hash).await
    }

    async fn get_by_hash(
        &self,
        _hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

/// Form-encoded authorization request parameters of exactly `len` bytes.
fn parameters(len: usize) -> String {
    let base = "client_id=s6BhdRkqt3&response_type=code&scope=openid%20profile%20email\
                &redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&state=af0ifjsldkj\
                &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
                &code_challenge_method=S256&nonce=n-0S6_WzA2Mj";
    base.chars().cycle().take(len).collect()
}

fn median_us(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn percentile_us(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn time_store<S: PushedAuthorizationRequestStore>(
    store: &S,
    request: &PushedAuthorizationRequest,
    iterations: usize,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        store.store(black_box(request)).await.expect("store");
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    samples
}

async fn time_get<S: PushedAuthorizationRequestStore>(
    store: &S,
    hash: &str,
    iterations: usize,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let found = store.get_by_hash(black_box(hash)).await.expect("get");
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        black_box(found);
    }
    samples
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const KEY_ID: &str = "k2026";
    let plain = OneSlot::default();
    let protected = ProtectedStore::new(
        OneSlot::default(),
        KeyRing::new(ProtectionKey::generate(KEY_ID)?),
    );
    let hash = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";

    println!(
        "{:>9} {:>9} | {:>26} | {:>26}",
        "params", "envelope", "encrypt (store) µs", "decrypt (get_by_hash) µs"
    );
    println!(
        "{:>9} {:>9} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "bytes", "bytes", "median", "p90", "plain", "median", "p90", "plain"
    );
    for (len, iterations) in [(600, 50_000), (16 * 1024, 10_000)] {
        let request = PushedAuthorizationRequest::new(
            hash,
            Utc::now() + Duration::seconds(3600),
            parameters(len),
        );
        // Warm up caches, the allocator and the CPU clock.
        time_store(&protected, &request, iterations / 10).await;
        time_get(&protected, hash, iterations / 10).await;
        assert_eq!(
            protected.get_by_hash(hash).await?.as_ref(),
            Some(&request),
            "round trip"
        );

        let plain_store = median_us(time_store(&plain, &request, iterations).await);
        let sealed = time_store(&protected, &request, iterations).await;
        let plain_get = median_us(time_get(&plain, hash, iterations).await);
        let opened = time_get(&protected, hash, iterations).await;
        println!(
            "{:>9} {:>9} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2}",
            len,
            envelope_len(len, KEY_ID.len()),
            median_us(sealed.clone()),
            percentile_us(&sealed, 0.9),
            plain_store,
            median_us(opened.clone()),
            percentile_us(&opened, 0.9),
            plain_get,
        );
    }
    println!(
        "\n\"plain\" is the same operation on the same no-op inner store without protection;\n\
         the protection cost is median minus plain."
    );
    Ok(())
}
