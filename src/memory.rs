//! The in-memory store: the same contract as PostgreSQL, for tests and single-process servers.

use crate::backend::{impl_store_for_backend, Backend};
use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::error::StoreError;
use crate::model::PushedAuthorizationRequest;
use crate::validate::DEFAULT_MAX_PARAMETERS_LEN;
use chrono::{DateTime, Utc};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Pushed authorization requests in process memory.
///
/// Same semantics as [`PostgresStore`](crate::PostgresStore), checked by the same contract
/// tests. Clones share the same data. Expired requests stay in memory (invisible) until
/// consumed or removed by [`delete_expired`](Self::delete_expired) or a
/// [`CleanupJob`](crate::CleanupJob).
///
/// ```
/// use chrono::{Duration, Utc};
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
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            requests: Arc::default(),
            max_parameters_len: DEFAULT_MAX_PARAMETERS_LEN,
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("max_parameters_len", &self.max_parameters_len)
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

    async fn insert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self.lock().entry(request.reference_value_hash.clone()) {
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(slot) => {
                slot.insert(PushedAuthorizationRequest {
                    expires_at,
                    ..request.clone()
                });
                Ok(true)
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
}

impl_store_for_backend!(MemoryStore);

#[async_trait::async_trait]
impl ExpiredRequestCleaner for MemoryStore {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut requests = self.lock();
        let expired: Vec<String> = requests
            .values()
            .filter(|request| request.expires_at <= now)
            .take(usize::try_from(batch_size).unwrap_or(usize::MAX))
            .map(|request| request.reference_value_hash.clone())
            .collect();
        for hash in &expired {
            requests.remove(hash);
        }
        Ok(expired.len() as u64)
    }
}
