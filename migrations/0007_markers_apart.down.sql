-- Back to 0006's schema: the markers return to pushed_authorization_requests.
DROP TABLE IF EXISTS _par_store_compatibility;

ALTER TABLE pushed_authorization_requests ALTER COLUMN parameters DROP NOT NULL;
ALTER TABLE pushed_authorization_requests ADD COLUMN consumed_at timestamptz;
ALTER TABLE pushed_authorization_requests
    ADD COLUMN reopenable boolean NOT NULL DEFAULT false;
ALTER TABLE pushed_authorization_requests ADD COLUMN consumed_by text;
ALTER TABLE pushed_authorization_requests
    ADD CONSTRAINT pushed_authorization_requests_live_has_parameters
        CHECK (consumed_at IS NOT NULL OR parameters IS NOT NULL);
ALTER TABLE pushed_authorization_requests
    ADD CONSTRAINT pushed_authorization_requests_consumed_by_length
        CHECK (octet_length(consumed_by) BETWEEN 1 AND 128);

-- A marker whose hash was stored again (only by hand: the store refuses it) stays a request.
INSERT INTO pushed_authorization_requests
    (reference_value_hash, expires_at, parameters, client_id, consumed_at, reopenable,
     consumed_by)
SELECT reference_value_hash, expires_at, kept_parameters, client_id, consumed_at, reopenable,
    consumed_by
FROM pushed_authorization_request_markers
ON CONFLICT (reference_value_hash) DO NOTHING;

DROP TABLE IF EXISTS pushed_authorization_request_markers;
