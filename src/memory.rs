//! The in-memory store: the same contract as PostgreSQL, for tests and single-process servers.

use crate::backend::{Backend, Inserted, Reload};
use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::consume_policy::ConsumePolicy;
use crate::consumption::Consumption;
use crate::error::StoreError;
use crate::lookup::Lookup;
use crate::model::PushedAuthorizationRequest;
use crate::telemetry::StoreMetrics;
use crate::validate::{DEFAULT_MAX_PARAMETERS_LEN, DEFAULT_MAX_REQUEST_LIFETIME};
use chrono::{DateTime, Utc};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Pushed authorization requests in process memory.
///
/// Same semantics as [`PostgresStore`](crate::PostgresStore), checked by the same contract
/// tests. Clones share the same data. Expired requests, and the markers consumed requests
/// leave, stay in memory (invisible to reads) until consumed or removed by
/// [`delete_expired`](Self::delete_expired) or a [`CleanupJob`](crate::CleanupJob).
///
/// ```
/// use par_store::chrono::{Duration, Utc};
/// use par_store::{MemoryStore, PushedAuthorizationRequest, PushedAuthorizationRequestStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), par_store::StoreError> {
/// let store = MemoryStore::new();
/// let request = PushedAuthorizationRequest::new("hash", Utc::now() + Duration::seconds(60), "p");
/// store.store(&request).await?;
/// let other_handle = store.clone();
/// assert!(other_handle.get_by_hash("hash").await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    requests: Arc<Mutex<HashMap<String, Held>>>,
    max_parameters_len: usize,
    max_request_lifetime: Duration,
    consumed_markers: bool,
    consume_policy: ConsumePolicy,
    /// Registered at the first operation, shared by the clones.
    metrics: Arc<StoreMetrics>,
}

/// One request as the store holds it: the request (its parameters emptied once consumed)
/// and, once consumed, its marker.
#[derive(Clone, Debug)]
struct Held {
    request: PushedAuthorizationRequest,
    consumed: Option<Marker>,
}

/// What a consumed request leaves until it expires.
#[derive(Clone, Debug)]
struct Marker {
    consumed_at: DateTime<Utc>,
    /// oauth-as's put-back may replace it (see `src/sql.rs`, `UPSERT`).
    reopenable: bool,
    /// The session binding of a `consume_in_session` under a reload window.
    consumed_by: Option<String>,
    /// The parameters, kept for that session's reloads until the first consumption after
    /// the window (PostgreSQL keeps them in the row's `parameters`).
    kept_parameters: Option<String>,
}

impl Held {
    fn live(request: PushedAuthorizationRequest) -> Self {
        Held {
            request,
            consumed: None,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            requests: Arc::default(),
            max_parameters_len: DEFAULT_MAX_PARAMETERS_LEN,
            max_request_lifetime: DEFAULT_MAX_REQUEST_LIFETIME,
            consumed_markers: true,
            consume_policy: ConsumePolicy::Once,
            metrics: Arc::default(),
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("max_parameters_len", &self.max_parameters_len)
            .field("max_request_lifetime", &self.max_request_lifetime)
            .field("consumed_markers", &self.consumed_markers)
            .field("consume_policy", &self.consume_policy)
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the largest `parameters` accepted by `store`, in bytes (default
    /// [`DEFAULT_MAX_PARAMETERS_LEN`](crate::PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN), 64 KiB).
    ///
    /// ```
    /// let store = par_store::MemoryStore::new().max_parameters_len(1024);
    /// ```
    #[must_use = "this returns the changed store and leaves the original as it was"]
    pub fn max_parameters_len(mut self, bytes: usize) -> Self {
        self.max_parameters_len = bytes;
        self
    }

    /// Sets the longest lifetime accepted by `store` (`expires_at` minus now; default
    /// [`DEFAULT_MAX_REQUEST_LIFETIME`](crate::PostgresStoreOptions::DEFAULT_MAX_REQUEST_LIFETIME), 1 hour), as
    /// [`PostgresStoreOptions::max_request_lifetime`](crate::PostgresStoreOptions::max_request_lifetime)
    /// does.
    ///
    /// ```
    /// let store = par_store::MemoryStore::new()
    ///     .max_request_lifetime(std::time::Duration::from_secs(600));
    /// ```
    #[must_use = "this returns the changed store and leaves the original as it was"]
    pub fn max_request_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_request_lifetime = lifetime;
        self
    }

    /// Whether a consumed request leaves a marker until it expires (`true`, the default), as
    /// [`PostgresStoreOptions::consumed_markers`](crate::PostgresStoreOptions::consumed_markers) describes.
    /// `false` is par-store 0.2's behaviour: a consumed request is removed, and
    /// [`Consumption::AlreadyConsumed`] is never reported.
    ///
    /// ```
    /// let store = par_store::MemoryStore::new().consumed_markers(false);
    /// ```
    #[must_use = "this returns the changed store and leaves the original as it was"]
    pub fn consumed_markers(mut self, enabled: bool) -> Self {
        self.consumed_markers = enabled;
        self
    }

    /// What [`consume_in_session`](crate::PushedAuthorizationRequestStore::consume_in_session)
    /// allows after a first consumption (default [`ConsumePolicy::Once`]), as
    /// [`PostgresStoreOptions::consume_policy`](crate::PostgresStoreOptions::consume_policy)
    /// describes. Clones share their requests: give them all the same policy.
    ///
    /// ```
    /// use par_store::ConsumePolicy;
    /// let store = par_store::MemoryStore::new()
    ///     .consume_policy(ConsumePolicy::ReloadWithin(std::time::Duration::from_secs(30)));
    /// ```
    #[must_use = "this returns the changed store and leaves the original as it was"]
    pub fn consume_policy(mut self, policy: ConsumePolicy) -> Self {
        self.consume_policy = policy;
        self
    }

    /// How many requests are held, expired ones and consumed markers included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no request is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired request and returns how many were removed.
    pub async fn delete_expired(&self) -> Result<u64, StoreError> {
        delete_expired_in_batches(self, DEFAULT_BATCH_SIZE).await
    }

    // No code path panics while holding the lock, so a poisoned lock still guards
    // consistent data.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for MemoryStore {
    const NAME: &'static str = "memory";

    fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    fn max_parameters_len(&self) -> usize {
        self.max_parameters_len
    }

    fn max_request_lifetime(&self) -> Duration {
        self.max_request_lifetime
    }

    fn reload_window(&self) -> Option<Duration> {
        self.consume_policy
            .reload_window()
            .filter(|_| self.consumed_markers)
    }

    async fn insert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let mut requests = self.lock();
        // The store's clock is the application's: checked again, as the database does.
        if expires_at <= Utc::now() {
            return Ok(Inserted::Expired);
        }
        match requests.entry(request.reference_value_hash.clone()) {
            Entry::Occupied(_) => Ok(Inserted::Duplicate),
            Entry::Vacant(slot) => {
                slot.insert(Held::live(PushedAuthorizationRequest {
                    expires_at,
                    ..request.clone()
                }));
                Ok(Inserted::Stored)
            }
        }
    }

    async fn look_up(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> Result<Lookup, StoreError> {
        // The same decisions, in the same order, as PostgreSQL's `LOOK_UP` and `CONSUME`.
        let requests = self.lock();
        let now = Utc::now();
        let Some(held) = requests.get(reference_value_hash) else {
            return Ok(Lookup::NotFound);
        };
        if held
            .request
            .client_id
            .as_deref()
            .is_some_and(|bound| bound != client_id)
        {
            return Ok(Lookup::WrongClient);
        }
        Ok(match &held.consumed {
            Some(marker) => Lookup::AlreadyConsumed {
                consumed_at: marker.consumed_at,
            },
            None if held.request.expires_at > now => Lookup::Found(held.request.clone()),
            None => Lookup::Expired,
        })
    }

    async fn select_live(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let now = Utc::now();
        Ok(self
            .lock()
            .get(reference_value_hash)
            .filter(|held| held.consumed.is_none() && held.request.expires_at > now)
            .map(|held| held.request.clone()))
    }

    async fn consume(
        &self,
        reference_value_hash: &str,
        client_id: Option<&str>,
        reopenable: bool,
        reload: Reload<'_>,
    ) -> Result<Consumption, StoreError> {
        // The same decisions, in the same order, as PostgreSQL's `CONSUME`.
        let mut requests = self.lock();
        let now = Utc::now();
        let Entry::Occupied(mut slot) = requests.entry(reference_value_hash.to_owned()) else {
            return Ok(Consumption::NotFound);
        };
        let held = slot.get_mut();
        let right_client = match (client_id, held.request.client_id.as_deref()) {
            (Some(caller), Some(bound)) => caller == bound,
            _ => true,
        };
        if !right_client {
            return Ok(Consumption::WrongClient);
        }
        let live = held.request.expires_at > now;
        if let Some(marker) = &mut held.consumed {
            // A marker is reported until cleanup removes it, expired or not; its kept
            // parameters serve a reload only while it is live and within the window.
            let open = live && within(marker.consumed_at, reload.window, now);
            if let (Some(binding), Some(parameters)) = (reload.binding, &marker.kept_parameters) {
                if open && marker.consumed_by.as_deref() == Some(binding) {
                    return Ok(Consumption::Consumed(PushedAuthorizationRequest {
                        parameters: parameters.clone(),
                        ..held.request.clone()
                    }));
                }
            }
            if !open {
                marker.kept_parameters = None;
            }
            return Ok(Consumption::AlreadyConsumed {
                consumed_at: marker.consumed_at,
            });
        }
        if !live || !self.consumed_markers {
            // Expired (garbage), or consumed without a marker: removed.
            let removed = slot.remove();
            return Ok(match live {
                false => Consumption::Expired,
                true => Consumption::Consumed(removed.request),
            });
        }
        let parameters = std::mem::take(&mut held.request.parameters);
        held.consumed = Some(Marker {
            consumed_at: now,
            reopenable,
            consumed_by: reload.binding.map(str::to_owned),
            kept_parameters: reload.binding.map(|_| parameters.clone()),
        });
        Ok(Consumption::Consumed(PushedAuthorizationRequest {
            parameters,
            ..held.request.clone()
        }))
    }

    async fn upsert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let mut requests = self.lock();
        // The store's clock is the application's: checked again, as the database does.
        if expires_at <= Utc::now() {
            return Ok(Inserted::Expired);
        }
        if let Some(Held {
            consumed: Some(marker),
            ..
        }) = requests.get(&request.reference_value_hash)
        {
            if !marker.reopenable {
                return Ok(Inserted::Duplicate);
            }
        }
        requests.insert(
            request.reference_value_hash.clone(),
            Held::live(PushedAuthorizationRequest {
                expires_at,
                ..request.clone()
            }),
        );
        Ok(Inserted::Stored)
    }

    async fn delete_bound_to(&self, client_id: &str) -> Result<u64, StoreError> {
        let mut requests = self.lock();
        let before = requests.len();
        requests.retain(|_, held| held.request.client_id.as_deref() != Some(client_id));
        Ok((before - requests.len()) as u64)
    }

    async fn delete_expired_as_of_batch(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> Result<u64, StoreError> {
        let mut requests = self.lock();
        let expired: Vec<String> = requests
            .values()
            .filter(|held| held.request.expires_at <= cutoff)
            .take(usize::try_from(batch_size).unwrap_or(usize::MAX))
            .map(|held| held.request.reference_value_hash.clone())
            .collect();
        for hash in &expired {
            requests.remove(hash);
        }
        Ok(expired.len() as u64)
    }
}

/// Whether `now` is less than `window` after `consumed_at` (PostgreSQL's `CONSUME` decides
/// the same with `now() - consumed_at < window`).
fn within(consumed_at: DateTime<Utc>, window: Duration, now: DateTime<Utc>) -> bool {
    match (now - consumed_at).to_std() {
        Ok(elapsed) => elapsed < window,
        // A clock that went back: no time has passed (PostgreSQL: a negative interval).
        Err(_) => true,
    }
}

crate::backend::store_impls!(MemoryStore);

#[async_trait::async_trait]
impl ExpiredRequestCleaner for MemoryStore {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        self.delete_expired_as_of_batch(Utc::now(), batch_size)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `store_or_replace` reaching the store after its request expired (by the store's own
    /// clock, read under the lock) replaces nothing, as PostgreSQL's upsert does.
    #[tokio::test]
    async fn an_upsert_expired_by_the_stores_clock_replaces_nothing() {
        let store = MemoryStore::new();
        let live = PushedAuthorizationRequest::new(
            "h",
            Utc::now() + chrono::Duration::seconds(60),
            "live",
        );
        assert_eq!(
            store.upsert(&live, live.expires_at).await.unwrap(),
            Inserted::Stored
        );
        let dead_at = Utc::now() - chrono::Duration::milliseconds(1);
        let dead = PushedAuthorizationRequest::new("h", dead_at, "dead");
        assert_eq!(
            store.upsert(&dead, dead_at).await.unwrap(),
            Inserted::Expired
        );
        assert_eq!(store.select_live("h").await.unwrap(), Some(live));
    }
}
