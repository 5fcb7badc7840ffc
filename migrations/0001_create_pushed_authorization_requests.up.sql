-- One row per pushed authorization request (RFC 9126), keyed by the hash of its
-- reference value. The reference value itself (the secret in the request_uri) is never stored.
CREATE TABLE pushed_authorization_requests (
    -- Hash of the reference value, e.g. Base64(SHA-256(value)): 44 characters.
    -- The limit mirrors the store's own input validation (1 to 128 bytes).
    reference_value_hash text PRIMARY KEY
        CONSTRAINT pushed_authorization_requests_hash_length
        CHECK (octet_length(reference_value_hash) BETWEEN 1 AND 128),
    -- After this instant the request is never returned again, cleaned or not.
    expires_at timestamptz NOT NULL,
    -- The server's protected request parameters, opaque to the store.
    parameters text NOT NULL,
    -- For operators: when the request was pushed.
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Cleanup walks expired rows oldest first: DELETE ... ORDER BY expires_at LIMIT n.
CREATE INDEX pushed_authorization_requests_expires_at_idx
    ON pushed_authorization_requests (expires_at);
