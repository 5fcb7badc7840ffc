-- One PAR lifecycle per pgbench transaction: the three statements of src/sql.rs
-- (store, get_by_hash, consume_by_hash), each autocommitted like the store's (no BEGIN).
-- The consume is CONSUME (migration 0007's two tables) with the store's binds for
-- consume_by_hash (any client, consumed markers on, not reopenable, no session) written in as
-- literals; pgbench cannot bind NULL.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <database>
--
-- bench/run.sh passes params (600 bytes of form-encoded parameters, as the load generator
-- stores) and expires_at (600 s ahead). With -M prepared every :variable is a bind
-- parameter ($1, $2, ...), so the server sees exactly the store's statements, and the
-- 600 bytes travel with each INSERT as they do from the store.
--
-- The store binds client_id as NULL for an unbound request; pgbench sends the same NULL.
--
-- A fresh random key per lifecycle. The store's keys are 44-character Base64 hashes; a
-- random 63-bit number (up to 19 digits) is as unique, and pgbench cannot build strings.
\set key random(1, 9000000000000000000)
INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) SELECT :key, CASE WHEN :expires_at::timestamptz > clock_timestamp() THEN :expires_at::timestamptz END, :params, NULL::text WHERE NOT EXISTS (SELECT FROM pushed_authorization_request_markers WHERE reference_value_hash = :key) ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > clock_timestamp();
WITH taken AS ( DELETE FROM pushed_authorization_requests WHERE reference_value_hash = :key AND (client_id IS NULL OR NULL::text IS NULL OR client_id = NULL::text) RETURNING expires_at, parameters, client_id), decided AS ( SELECT expires_at, parameters, client_id, clock_timestamp() AS decided_at FROM taken), marked AS ( INSERT INTO pushed_authorization_request_markers AS m (reference_value_hash, expires_at, client_id, consumed_at, reopenable, consumed_by, kept_parameters) SELECT :key, expires_at, client_id, decided_at, false, NULL::text, CASE WHEN NULL::text IS NOT NULL THEN parameters END FROM decided WHERE expires_at > decided_at AND true ON CONFLICT (reference_value_hash) DO NOTHING) SELECT true AS taken, expires_at, parameters, client_id, expires_at > decided_at, NULL::timestamptz AS consumed_at, false AS kept FROM decided;
