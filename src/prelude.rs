//! The traits and the everyday types, for a glob import:
//!
//! ```
//! use par_store::prelude::*;
//! # use par_store::chrono::{Duration, Utc};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), StoreError> {
//! let store = MemoryStore::new(); // or PostgresStore::connect(url).await?
//! let reference = ReferenceValue::generate();
//! let request = PushedAuthorizationRequest::new(reference.hash(), Utc::now() + Duration::seconds(60), "p")
//!     .with_client_id("client-a");
//! store.store(&request).await?; // PushedAuthorizationRequestStore
//! assert_eq!(store.delete_by_client_id("client-a").await?, 1); // PushedAuthorizationRequestStoreExt
//! # Ok(())
//! # }
//! ```
//!
//! The traits must be in scope for their methods to be called on a store; the rest of the
//! crate (options, cleanup, protection) is imported by name.

pub use crate::consumption::Consumption;
pub use crate::error::StoreError;
pub use crate::lookup::Lookup;
pub use crate::memory::MemoryStore;
pub use crate::model::PushedAuthorizationRequest;
pub use crate::postgres::{PostgresStore, PostgresStoreOptions};
pub use crate::reference::ReferenceValue;
pub use crate::store::PushedAuthorizationRequestStore;
pub use crate::store_ext::PushedAuthorizationRequestStoreExt;
