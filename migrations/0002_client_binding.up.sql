-- An optional binding of each request to the client that pushed it (RFC 9126 section 2.2),
-- so that a server can remove every outstanding request of a client it deletes.
-- NULL for requests stored without a binding (the seed's three-field shape).
-- The limit mirrors the store's own input validation (1 to 1024 bytes).
ALTER TABLE pushed_authorization_requests
    ADD COLUMN client_id text
        CONSTRAINT pushed_authorization_requests_client_id_length
        CHECK (octet_length(client_id) BETWEEN 1 AND 1024);

-- delete_by_client_id: DELETE ... WHERE client_id = $1. Partial, so that requests stored
-- without a binding cost no index entry.
CREATE INDEX pushed_authorization_requests_client_id_idx
    ON pushed_authorization_requests (client_id)
    WHERE client_id IS NOT NULL;
