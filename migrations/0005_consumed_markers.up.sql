-- Consumed markers (tombstones), par-store 0.3: a consumed request keeps its row until it
-- expires, so that a second consumption can be told apart from an unknown request_uri
-- (RFC 9126 section 7.3; a reuse is a security event). Cleanup removes the row at expires_at
-- like any expired one.
--
-- Written for Citus too (issue 17): every ADD CONSTRAINT in an ALTER TABLE of its own, and
-- the distribution column (reference_value_hash) is never altered.
--
-- consumed_at: NULL while the request is live; when it was consumed otherwise.
ALTER TABLE pushed_authorization_requests ADD COLUMN consumed_at timestamptz;

-- reopenable: a marker that oauth-as's put-back may replace (the adapter's take, which
-- oauth-as undoes when a stranger presented the request_uri). A request consumed through
-- consume / consume_for_client / consume_by_hash is never brought back.
ALTER TABLE pushed_authorization_requests
    ADD COLUMN reopenable boolean NOT NULL DEFAULT false;

-- The parameters are cleared on consumption: a marker holds no request.
ALTER TABLE pushed_authorization_requests ALTER COLUMN parameters DROP NOT NULL;

-- A live request always has its parameters.
ALTER TABLE pushed_authorization_requests
    ADD CONSTRAINT pushed_authorization_requests_live_has_parameters
        CHECK (consumed_at IS NOT NULL OR parameters IS NOT NULL);
