-- Back to 0.2's schema: the consumed markers go (in 0.2 a consumed request has no row), and
-- every remaining row is a live or expired request with its parameters.
DELETE FROM pushed_authorization_requests WHERE consumed_at IS NOT NULL OR parameters IS NULL;

ALTER TABLE pushed_authorization_requests
    DROP CONSTRAINT IF EXISTS pushed_authorization_requests_live_has_parameters;

ALTER TABLE pushed_authorization_requests ALTER COLUMN parameters SET NOT NULL;

ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS reopenable;

ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS consumed_at;
