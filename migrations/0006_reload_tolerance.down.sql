-- Back to 0005's schema: the session bindings go. A consumed row that still holds its
-- parameters for a reload keeps only its marker, as 0005's consume leaves it.
UPDATE pushed_authorization_requests SET parameters = NULL
WHERE consumed_at IS NOT NULL AND parameters IS NOT NULL;

ALTER TABLE pushed_authorization_requests
    DROP CONSTRAINT IF EXISTS pushed_authorization_requests_consumed_by_length;

ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS consumed_by;
