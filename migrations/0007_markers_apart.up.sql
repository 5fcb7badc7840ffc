-- Consumed markers move to a table of their own (par-store 0.3.0), and the schema records
-- which par-store releases may serve it.
--
-- 1. Why apart: 0.2's statements match a row by its hash alone (its consume is a
--    `DELETE ... WHERE reference_value_hash = $1 RETURNING ...`). A marker kept in
--    pushed_authorization_requests was therefore deleted and decoded by any 0.2 instance
--    still serving during a deploy: a marker without parameters failed 0.2's decoding (and
--    was lost), and one that kept its parameters for a reload window was handed out a second
--    time. In a table that no older release reads, a consumed request is simply absent from
--    pushed_authorization_requests: 0.2 finds nothing, 0.3 finds the marker.
--    pushed_authorization_requests is back to 0.2's shape (plus 0004's constraint).
-- 2. _par_store_compatibility: a migration that makes older releases unable to serve the
--    schema records the oldest release that can (docs/upgrading.md); migrate() refuses to
--    start an older one. This migration is additive for 0.2, so it records nothing.
--
-- Written for Citus too: PostgresStore::distribute_on_citus() distributes the new table
-- with the requests table's colocation (one shard holds a request and its marker).
CREATE TABLE pushed_authorization_request_markers (
    reference_value_hash text COLLATE "C" PRIMARY KEY
        CONSTRAINT pushed_authorization_request_markers_hash_length
        CHECK (octet_length(reference_value_hash) BETWEEN 1 AND 128),
    -- The request's own expiry: cleanup removes the marker then, as it would the request.
    expires_at timestamptz NOT NULL
        CONSTRAINT pushed_authorization_request_markers_expires_at_readable
        CHECK (isfinite(expires_at) AND expires_at < '262143-01-01 00:00:00+00'),
    client_id text
        CONSTRAINT pushed_authorization_request_markers_client_id_length
        CHECK (octet_length(client_id) BETWEEN 1 AND 1024),
    consumed_at timestamptz NOT NULL,
    -- A marker that oauth-as's put-back may replace (the adapter's take).
    reopenable boolean NOT NULL DEFAULT false,
    -- The session binding of a consumption under a reload window, and the parameters kept
    -- for that session's reloads until the window closes; NULL otherwise.
    consumed_by text
        CONSTRAINT pushed_authorization_request_markers_consumed_by_length
        CHECK (octet_length(consumed_by) BETWEEN 1 AND 128),
    kept_parameters text,
    CONSTRAINT pushed_authorization_request_markers_kept_for_a_session
        CHECK (kept_parameters IS NULL OR consumed_by IS NOT NULL)
);

CREATE INDEX pushed_authorization_request_markers_expires_at_idx
    ON pushed_authorization_request_markers (expires_at);

CREATE INDEX pushed_authorization_request_markers_client_id_idx
    ON pushed_authorization_request_markers (client_id)
    WHERE client_id IS NOT NULL;

-- The markers that 0005 and 0006 kept in the requests table.
INSERT INTO pushed_authorization_request_markers
    (reference_value_hash, expires_at, client_id, consumed_at, reopenable, consumed_by,
     kept_parameters)
SELECT reference_value_hash, expires_at, client_id, consumed_at, reopenable, consumed_by,
    CASE WHEN consumed_by IS NOT NULL THEN parameters END
FROM pushed_authorization_requests
WHERE consumed_at IS NOT NULL;

DELETE FROM pushed_authorization_requests WHERE consumed_at IS NOT NULL;

-- pushed_authorization_requests as 0.2 reads it: every row a request with its parameters.
ALTER TABLE pushed_authorization_requests
    DROP CONSTRAINT IF EXISTS pushed_authorization_requests_consumed_by_length;
ALTER TABLE pushed_authorization_requests
    DROP CONSTRAINT IF EXISTS pushed_authorization_requests_live_has_parameters;
ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS consumed_by;
ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS reopenable;
ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS consumed_at;
ALTER TABLE pushed_authorization_requests ALTER COLUMN parameters SET NOT NULL;

-- One row per migration that older releases cannot serve: the oldest release that can.
CREATE TABLE IF NOT EXISTS _par_store_compatibility (
    migration_version bigint PRIMARY KEY,
    oldest_release text NOT NULL
        CONSTRAINT _par_store_compatibility_release_format
        CHECK (oldest_release ~ '^[0-9]+\.[0-9]+\.[0-9]+$'),
    reason text NOT NULL
);
