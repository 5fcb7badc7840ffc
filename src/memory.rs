//! The in-memory store: the same contract as PostgreSQL, for tests and single-process servers.

use crate::backend::{impl_client_binding_for_backend, impl_store_for_backend, Backend, Inserted};
use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::error::StoreError;
use crate::model::PushedAuthorizationRequest;
use crate::validate::{DEFAULT_MAX_LIFETIME, DEFAULT_MAX_PARAMETERS_LEN};
use chrono::{DateTime, Utc};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Pushed authorization requests in process memory.
///
/// Same semantics as [`PostgresStore`](crate::PostgresStore), checked by the same contract
/// tests. Clones share the same data. Expired requests stay in memory (invisible) until
/// consumed or removed by [`delete_expired`](Self::delete_expired) or a
/// [`CleanupJob`](crate::CleanupJob).
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
    requests: Arc<Mutex<HashMap<String, PushedAuthorizationRequest>>>,
    max_parameters_len: usize,
    max_lifetime: Duration,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            requests: Arc::default(),
            max_parameters_len: DEFAULT_MAX_PARAMETERS_LEN,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("max_parameters_len", &self.max_parameters_len)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the largest `parameters` accepted by `store`, in bytes (default 64 KiB).
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
    /// [`DEFAULT_MAX_LIFETIME`](crate::DEFAULT_MAX_LIFETIME), 1 hour), as
    /// [`PostgresStore::max_lifetime`](crate::PostgresStore::max_lifetime) does.
    ///
    /// ```
    /// let store = par_store::MemoryStore::new().max_lifetime(std::time::Duration::from_secs(600));
    /// ```
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// How many requests are held, expired ones included.
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
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PushedAuthorizationRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for MemoryStore {
    const NAME: &'static str = "memory";

    fn max_parameters_len(&self) -> usize {
        self.max_parameters_len
    }

    fn max_lifetime(&self) -> Duration {
        self.max_lifetime
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
                slot.insert(PushedAuthorizationRequest {
                    expires_at,
                    ..request.clone()
                });
                Ok(Inserted::Stored)
            }
        }
    }

    async fn select_live(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let now = Utc::now();
        Ok(self
            .lock()
            .get(reference_value_hash)
            .filter(|request| request.expires_at > now)
            .cloned())
    }

    async fn delete_returning_live(
        &self,
        reference_value_hash: &str,
    ) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
        let removed = self.lock().remove(reference_value_hash);
        let now = Utc::now();
        Ok(removed.filter(|request| request.expires_at > now))
    }

    async fn upsert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.lock().insert(
            request.reference_value_hash.clone(),
            PushedAuthorizationRequest {
                expires_at,
                ..request.clone()
            },
        );
        Ok(())
    }

    async fn delete_bound_to(&self, client_id: &str) -> Result<u64, StoreError> {
        let mut requests = self.lock();
        let before = requests.len();
        requests.retain(|_, request| request.client_id.as_deref() != Some(client_id));
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
            .filter(|request| request.expires_at <= cutoff)
            .take(usize::try_from(batch_size).unwrap_or(usize::MAX))
            .map(|request| request.reference_value_hash.clone())
            .collect();
        for hash in &expired {
            requests.remove(hash);
        }
        Ok(expired.len() as u64)
    }
}

impl_store_for_backend!(MemoryStore);
impl_client_binding_for_backend!(MemoryStore);

#[async_trait::async_trait]
impl ExpiredRequestCleaner for MemoryStore {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        self.delete_expired_as_of_batch(Utc::now(), batch_size)
            .await
    }
}
