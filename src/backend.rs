//! The store operations written once: input rules, tracing and the contract's shape live
//! here; each backend only provides its three round trips.

use crate::error::StoreError;
use crate::model::PushedAuthorizationRequest;
use crate::telemetry::{found_or_not, stored, traced, Operation};
use crate::validate::{already_expired, check_request, is_storable_hash};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::Duration;

/// What became of an insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The request is stored.
    Stored,
    /// A request with the same hash exists and was left untouched.
    Duplicate,
    /// `expires_at` is not in the future by the backend's own clock (the database's, which
    /// may disagree with the application's): nothing was stored.
    Expired,
}

/// One round trip each, called only with input that passed the shared rules.
pub(crate) trait Backend: Send + Sync {
    /// The `backend` field of the operation spans.
    const NAME: &'static str;

    /// Largest accepted `parameters`, in bytes.
    fn max_parameters_len(&self) -> usize;

    /// Longest accepted lifetime (`expires_at` minus now).
    fn max_lifetime(&self) -> Duration;

    /// Inserts the request with `expires_at` (already checked against the application's
    /// clock and truncated), unless `expires_at` has passed by the backend's clock, in the
    /// same step.
    fn insert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send;

    /// The request if it exists and is live.
    fn select_live(
        &self,
        reference_value_hash: &str,
    ) -> impl Future<Output = Result<Option<PushedAuthorizationRequest>, StoreError>> + Send;

    /// Atomically removes the request, live or expired, and returns it only if it was live.
    fn delete_returning_live(
        &self,
        reference_value_hash: &str,
    ) -> impl Future<Output = Result<Option<PushedAuthorizationRequest>, StoreError>> + Send;
}

/// `PushedAuthorizationRequestStore::store` for any backend.
pub(crate) async fn store<B: Backend>(
    backend: &B,
    request: &PushedAuthorizationRequest,
) -> Result<(), StoreError> {
    let run = async {
        let expires_at = check_request(
            request,
            backend.max_parameters_len(),
            backend.max_lifetime(),
            Utc::now(),
        )?;
        match backend.insert(request, expires_at).await? {
            Inserted::Stored => Ok(()),
            Inserted::Duplicate => Err(StoreError::Duplicate),
            Inserted::Expired => Err(already_expired()),
        }
    };
    traced(
        Operation::Store,
        B::NAME,
        &request.reference_value_hash,
        stored,
        run,
    )
    .await
}

/// `get_by_hash` and `consume_by_hash` for any backend: a hash that could never have been
/// stored is not found, without a round trip.
async fn look_up<B: Backend>(
    operation: Operation,
    reference_value_hash: &str,
    round_trip: impl Future<Output = Result<Option<PushedAuthorizationRequest>, StoreError>>,
) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
    // `round_trip` is lazy: nothing reaches the backend unless it is awaited.
    let run = async {
        if !is_storable_hash(reference_value_hash) {
            return Ok(None);
        }
        round_trip.await
    };
    traced(operation, B::NAME, reference_value_hash, found_or_not, run).await
}

/// Implements `PushedAuthorizationRequestStore` for a [`Backend`] through the shared
/// operations above.
macro_rules! impl_store_for_backend {
    ($backend:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::PushedAuthorizationRequestStore for $backend {
            async fn store(
                &self,
                request: &$crate::model::PushedAuthorizationRequest,
            ) -> Result<(), $crate::error::StoreError> {
                $crate::backend::store(self, request).await
            }

            async fn consume_by_hash(
                &self,
                reference_value_hash: &str,
            ) -> Result<Option<$crate::model::PushedAuthorizationRequest>, $crate::error::StoreError>
            {
                $crate::backend::consume_by_hash(self, reference_value_hash).await
            }

            async fn get_by_hash(
                &self,
                reference_value_hash: &str,
            ) -> Result<Option<$crate::model::PushedAuthorizationRequest>, $crate::error::StoreError>
            {
                $crate::backend::get_by_hash(self, reference_value_hash).await
            }
        }
    };
}
pub(crate) use impl_store_for_backend;

/// `PushedAuthorizationRequestStore::get_by_hash` for any backend.
pub(crate) async fn get_by_hash<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
    let round_trip = backend.select_live(reference_value_hash);
    look_up::<B>(Operation::Get, reference_value_hash, round_trip).await
}

/// `PushedAuthorizationRequestStore::consume_by_hash` for any backend.
pub(crate) async fn consume_by_hash<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
    let round_trip = backend.delete_returning_live(reference_value_hash);
    look_up::<B>(Operation::Consume, reference_value_hash, round_trip).await
}
