//! The store operations, as spans, metrics and logs name them.

/// Which store operation a span describes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operation {
    Store,
    Replace,
    Get,
    GetForClient,
    Consume,
    ConsumeForClient,
    ConsumeInSession,
    #[cfg(feature = "oauth-as")]
    Take,
    DeleteByClientId,
}

impl Operation {
    /// Every operation, in declaration order (`operation as usize` is its index).
    #[cfg(feature = "metrics")]
    pub(crate) const ALL: &'static [Operation] = &[
        Operation::Store,
        Operation::Replace,
        Operation::Get,
        Operation::GetForClient,
        Operation::Consume,
        Operation::ConsumeForClient,
        Operation::ConsumeInSession,
        #[cfg(feature = "oauth-as")]
        Operation::Take,
        Operation::DeleteByClientId,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Store => "store",
            Operation::Replace => "store_or_replace",
            Operation::DeleteByClientId => "delete_by_client_id",
            Operation::Get => "get_by_hash",
            Operation::GetForClient => "get_for_client",
            Operation::Consume => "consume_by_hash",
            Operation::ConsumeForClient => "consume_for_client",
            Operation::ConsumeInSession => "consume_in_session",
            #[cfg(feature = "oauth-as")]
            Operation::Take => "take_pushed_authorization_request",
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::Operation;

    #[test]
    fn every_operation_is_listed_at_its_own_index() {
        // StoreMetrics finds an operation's histogram at `operation as usize`.
        for (index, operation) in Operation::ALL.iter().enumerate() {
            assert_eq!(*operation as usize, index, "{operation:?}");
        }
        let last = Operation::DeleteByClientId as usize;
        assert_eq!(Operation::ALL.len(), last + 1);
    }
}
