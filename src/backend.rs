//! The store operations written once: input rules, tracing and the contract's shape live
//! here; each backend only provides its three round trips.

use crate::cleanup::{delete_expired_in_batches, ExpiredRequestCleaner, DEFAULT_BATCH_SIZE};
use crate::consumption::Consumption;
use crate::error::StoreError;
use crate::lookup::Lookup;
use crate::model::PushedAuthorizationRequest;
use crate::operation::Operation;
use crate::telemetry::{
    consumption, count_consumption, count_stored, found_or_not, lookup, removed, stored, traced,
    StoreMetrics,
};
use crate::validate::{
    already_expired, check_client_id, check_request, check_session_binding, is_storable_client_id,
    is_storable_hash,
};
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

/// What a consumption needs of the reload policy
/// ([`ConsumePolicy::ReloadWithin`](crate::ConsumePolicy::ReloadWithin)).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reload<'a> {
    /// The session binding of a `consume_in_session` under a reload window (checked);
    /// `None` for every other consumption, and when the window is zero.
    pub(crate) binding: Option<&'a str>,
    /// The store's window (zero: no reload). Every consumption needs it: a marker that still
    /// holds parameters once the window has passed has them cleared by the next one.
    pub(crate) window: Duration,
}

/// One round trip each, called only with input that passed the shared rules.
pub(crate) trait Backend: Send + Sync {
    /// The `backend` field of the operation spans.
    const NAME: &'static str;

    /// Its metrics (registered at its first operation), shared by its clones.
    fn metrics(&self) -> &StoreMetrics;

    /// Largest accepted `parameters`, in bytes.
    fn max_parameters_len(&self) -> usize;

    /// Longest accepted lifetime (`expires_at` minus now).
    fn max_request_lifetime(&self) -> Duration;

    /// The reload window of `consume_in_session`: `None` under `ConsumePolicy::Once`, and
    /// with consumed markers off (nothing is kept to reload from).
    fn reload_window(&self) -> Option<Duration>;

    /// Inserts the request with `expires_at` (already checked against the application's
    /// clock and truncated), unless `expires_at` has passed by the backend's clock, in the
    /// same step.
    fn insert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send;

    /// What the backend holds under the hash, for `client_id`, without changing anything:
    /// `WrongClient` for a request or marker bound to another client; a marker is
    /// `AlreadyConsumed` (expired or not, until cleanup removes it); a request `Expired` or
    /// `Found`; nothing `NotFound`.
    fn look_up(
        &self,
        reference_value_hash: &str,
        client_id: &str,
    ) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// The request if it exists and is live.
    fn select_live(
        &self,
        reference_value_hash: &str,
    ) -> impl Future<Output = Result<Option<PushedAuthorizationRequest>, StoreError>> + Send;

    /// Consumes the request in one atomic step, as [`Consumption`] describes: only when it is
    /// bound to `client_id` or to no client (`client_id` `None`: any binding). With consumed
    /// markers on, a live request becomes a marker (`reopenable` as given); with them off it
    /// is removed. An expired request of the right client is removed either way.
    ///
    /// With a `reload.binding` (markers on): a live request becomes a marker that keeps its
    /// parameters and records the binding; a live marker with the same binding, its
    /// parameters kept, less than `reload.window` after it was consumed, is answered
    /// `Consumed` again, unchanged. A consumption of the right client that finds a live
    /// marker still holding parameters at or after the window clears them
    /// (`AlreadyConsumed`).
    fn consume(
        &self,
        reference_value_hash: &str,
        client_id: Option<&str>,
        reopenable: bool,
        reload: Reload<'_>,
    ) -> impl Future<Output = Result<Consumption, StoreError>> + Send;

    /// Inserts the request with `expires_at` (already checked against the application's
    /// clock and truncated), replacing any request with the same hash, in one atomic step,
    /// unless `expires_at` has passed by the backend's clock (then nothing changes: a live
    /// request is never replaced by a dead one); a consumed request's marker is replaced only
    /// when it is reopenable (otherwise `Duplicate`).
    fn upsert(
        &self,
        request: &PushedAuthorizationRequest,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send;

    /// Removes every request bound to `client_id` (a storable one), live or expired.
    fn delete_bound_to(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Removes at most `batch_size` requests with `expires_at <= cutoff`, never waiting for
    /// rows another caller holds.
    fn delete_expired_as_of_batch(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// `PushedAuthorizationRequestStore::store` for any backend.
pub(crate) async fn store<B: Backend>(
    backend: &B,
    request: &PushedAuthorizationRequest,
) -> Result<(), StoreError> {
    write(backend, request, Operation::Store).await
}

/// `store_or_replace` for any backend: the same input rules as `store`.
pub(crate) async fn store_or_replace<B: Backend>(
    backend: &B,
    request: &PushedAuthorizationRequest,
) -> Result<(), StoreError> {
    write(backend, request, Operation::Replace).await
}

/// `store` (insert, a duplicate refused) or, for [`Operation::Replace`], `store_or_replace`.
async fn write<B: Backend>(
    backend: &B,
    request: &PushedAuthorizationRequest,
    operation: Operation,
) -> Result<(), StoreError> {
    let run = async {
        let expires_at = check_request(
            request,
            backend.max_parameters_len(),
            backend.max_request_lifetime(),
            Utc::now(),
        )?;
        if let Operation::Replace = operation {
            // A consumed request is never brought back: its hash is taken, as for `store`.
            return stored_or_refused(backend, backend.upsert(request, expires_at).await?);
        }
        stored_or_refused(backend, backend.insert(request, expires_at).await?)
    };
    traced(
        backend.metrics(),
        operation,
        B::NAME,
        Some(&request.reference_value_hash),
        stored,
        run,
    )
    .await
}

/// What `store` and `store_or_replace` answer for what became of the write.
fn stored_or_refused<B: Backend>(backend: &B, inserted: Inserted) -> Result<(), StoreError> {
    match inserted {
        Inserted::Stored => {
            count_stored(backend.metrics(), B::NAME);
            Ok(())
        }
        Inserted::Duplicate => Err(StoreError::Duplicate),
        Inserted::Expired => Err(already_expired()),
    }
}

/// `delete_by_client_id` for any backend: an id no request could be bound to removes
/// nothing, without a round trip.
pub(crate) async fn delete_by_client_id<B: Backend>(
    backend: &B,
    client_id: &str,
) -> Result<u64, StoreError> {
    let run = async {
        if !is_storable_client_id(client_id) {
            return Ok(0);
        }
        backend.delete_bound_to(client_id).await
    };
    traced(
        backend.metrics(),
        Operation::DeleteByClientId,
        B::NAME,
        None,
        removed,
        run,
    )
    .await
}

/// A backend seen as a cleaner whose notion of "expired" is a fixed cutoff instant, so that
/// `delete_expired_as_of` runs the same batch loop as `delete_expired` and the `CleanupJob`.
struct AsOf<'a, B> {
    backend: &'a B,
    cutoff: DateTime<Utc>,
}

#[async_trait::async_trait]
impl<B: Backend> ExpiredRequestCleaner for AsOf<'_, B> {
    async fn delete_expired_batch(&self, batch_size: u32) -> Result<u64, StoreError> {
        self.backend
            .delete_expired_as_of_batch(self.cutoff, batch_size)
            .await
    }
}

/// `delete_expired_as_of` for any backend.
pub(crate) async fn delete_expired_as_of<B: Backend>(
    backend: &B,
    cutoff: DateTime<Utc>,
) -> Result<u64, StoreError> {
    delete_expired_in_batches(&AsOf { backend, cutoff }, DEFAULT_BATCH_SIZE).await
}

/// `get_by_hash` for any backend: a hash that could never have been
/// stored is not found, without a round trip.
async fn look_up<B: Backend>(
    metrics: &StoreMetrics,
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
    traced(
        metrics,
        operation,
        B::NAME,
        Some(reference_value_hash),
        found_or_not,
        run,
    )
    .await
}

/// Writes `impl PushedAuthorizationRequestStore` and `impl PushedAuthorizationRequestStoreExt`
/// for a backend, each method one of the shared operations of this file. Explicit impls per
/// store (not a blanket `impl<B: Backend>`), so that each store's rustdoc page shows the
/// traits among its own implementations; `ProtectedStore` writes its own.
macro_rules! store_impls {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::PushedAuthorizationRequestStore for $store {
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

            async fn get_for_client(
                &self,
                reference_value_hash: &str,
                client_id: &str,
            ) -> Result<$crate::lookup::Lookup, $crate::error::StoreError> {
                $crate::backend::get_for_client(self, reference_value_hash, client_id).await
            }

            async fn consume_for_client(
                &self,
                reference_value_hash: &str,
                client_id: &str,
            ) -> Result<$crate::consumption::Consumption, $crate::error::StoreError> {
                $crate::backend::consume_for_client(self, reference_value_hash, client_id).await
            }

            async fn consume_in_session(
                &self,
                reference_value_hash: &str,
                client_id: &str,
                session_binding: &str,
            ) -> Result<$crate::consumption::Consumption, $crate::error::StoreError> {
                $crate::backend::consume_in_session(
                    self,
                    reference_value_hash,
                    client_id,
                    session_binding,
                )
                .await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store_ext::PushedAuthorizationRequestStoreExt for $store {
            async fn store_or_replace(
                &self,
                request: &$crate::model::PushedAuthorizationRequest,
            ) -> Result<(), $crate::error::StoreError> {
                $crate::backend::store_or_replace(self, request).await
            }

            async fn delete_by_client_id(
                &self,
                client_id: &str,
            ) -> Result<u64, $crate::error::StoreError> {
                $crate::backend::delete_by_client_id(self, client_id).await
            }

            async fn delete_expired_as_of(
                &self,
                cutoff: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::error::StoreError> {
                $crate::backend::delete_expired_as_of(self, cutoff).await
            }
        }
    };
}
pub(crate) use store_impls;

/// `PushedAuthorizationRequestStore::get_by_hash` for any backend.
pub(crate) async fn get_by_hash<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
    let round_trip = backend.select_live(reference_value_hash);
    look_up::<B>(
        backend.metrics(),
        Operation::Get,
        reference_value_hash,
        round_trip,
    )
    .await
}

/// `PushedAuthorizationRequestStore::get_for_client` for any backend: a hash that could never
/// have been stored is not found, without a round trip; a client id that no request could be
/// bound to is refused, as by `consume_for_client`.
pub(crate) async fn get_for_client<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
    client_id: &str,
) -> Result<Lookup, StoreError> {
    let run = async {
        check_client_id(client_id)?;
        if !is_storable_hash(reference_value_hash) {
            return Ok(Lookup::NotFound);
        }
        backend.look_up(reference_value_hash, client_id).await
    };
    traced(
        backend.metrics(),
        Operation::GetForClient,
        B::NAME,
        Some(reference_value_hash),
        lookup,
        run,
    )
    .await
}

/// `PushedAuthorizationRequestStore::consume_by_hash` for any backend: a consumption
/// without a client check, seen as an `Option`.
pub(crate) async fn consume_by_hash<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
) -> Result<Option<PushedAuthorizationRequest>, StoreError> {
    let run = async {
        let outcome = if is_storable_hash(reference_value_hash) {
            backend
                .consume(reference_value_hash, None, false, reload(backend, None))
                .await?
        } else {
            Consumption::NotFound
        };
        count_consumption(backend.metrics(), B::NAME, &outcome);
        Ok(outcome.into_consumed())
    };
    traced(
        backend.metrics(),
        Operation::Consume,
        B::NAME,
        Some(reference_value_hash),
        found_or_not,
        run,
    )
    .await
}

/// The reload policy as one consumption needs it.
fn reload<'a, B: Backend>(backend: &B, session_binding: Option<&'a str>) -> Reload<'a> {
    let window = backend.reload_window().unwrap_or_default();
    Reload {
        binding: session_binding.filter(|_| !window.is_zero()),
        window,
    }
}

/// `consume_for_client`, `consume_in_session` and oauth-as's take for any
/// backend: a hash that could never have been stored is not found, without a round trip; a
/// client id or session binding that no request could be bound to is refused, and nothing
/// is consumed.
async fn consume_traced<B: Backend>(
    backend: &B,
    operation: Operation,
    reference_value_hash: &str,
    client_id: Option<&str>,
    reopenable: bool,
    session_binding: Option<&str>,
) -> Result<Consumption, StoreError> {
    let run = async {
        if let Some(client_id) = client_id {
            check_client_id(client_id)?;
        }
        if let Some(binding) = session_binding {
            check_session_binding(binding)?;
        }
        let reload = reload(backend, session_binding);
        let outcome = if is_storable_hash(reference_value_hash) {
            backend
                .consume(reference_value_hash, client_id, reopenable, reload)
                .await?
        } else {
            Consumption::NotFound
        };
        count_consumption(backend.metrics(), B::NAME, &outcome);
        Ok(outcome)
    };
    traced(
        backend.metrics(),
        operation,
        B::NAME,
        Some(reference_value_hash),
        consumption,
        run,
    )
    .await
}

/// `PushedAuthorizationRequestStore::consume_for_client` for any backend.
pub(crate) async fn consume_for_client<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
    client_id: &str,
) -> Result<Consumption, StoreError> {
    consume_traced(
        backend,
        Operation::ConsumeForClient,
        reference_value_hash,
        Some(client_id),
        false,
        None,
    )
    .await
}

/// `PushedAuthorizationRequestStore::consume_in_session` for any backend.
pub(crate) async fn consume_in_session<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
    client_id: &str,
    session_binding: &str,
) -> Result<Consumption, StoreError> {
    consume_traced(
        backend,
        Operation::ConsumeInSession,
        reference_value_hash,
        Some(client_id),
        false,
        Some(session_binding),
    )
    .await
}

/// oauth-as's take: a consumption of any client's request that reports what it found, leaving a marker that its put-back (`store_or_replace`) may
/// replace.
#[cfg(feature = "oauth-as")]
pub(crate) async fn take<B: Backend>(
    backend: &B,
    reference_value_hash: &str,
) -> Result<Consumption, StoreError> {
    consume_traced(
        backend,
        Operation::Take,
        reference_value_hash,
        None,
        true,
        None,
    )
    .await
}
