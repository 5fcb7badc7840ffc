DROP INDEX IF EXISTS pushed_authorization_requests_client_id_idx;
ALTER TABLE pushed_authorization_requests DROP COLUMN IF EXISTS client_id;
