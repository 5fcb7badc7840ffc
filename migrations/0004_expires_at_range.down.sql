-- Back to the 0.2 schema; every row is kept (rows made expired by the up migration stay so).
ALTER TABLE pushed_authorization_requests
    DROP CONSTRAINT IF EXISTS pushed_authorization_requests_expires_at_readable;
