-- One PAR lifecycle per pgbench transaction: the three statements of src/sql.rs
-- (store, get_by_hash, consume_by_hash), each autocommitted like the store's (no BEGIN).
-- The consume is 0.3's CONSUME with the store's binds for consume_by_hash (any client,
-- consumed markers on, not reopenable) written in as literals; pgbench cannot bind NULL.
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
INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) VALUES (:key, CASE WHEN :expires_at::timestamptz > now() THEN :expires_at::timestamptz END, :params, NULL::text) ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > now() AND consumed_at IS NULL;
WITH target AS ( SELECT reference_value_hash, expires_at, parameters, client_id, consumed_at, consumed_by, expires_at > now() AS live, now() - consumed_at < 0::int8 * interval '1 microsecond' AS in_window FROM pushed_authorization_requests WHERE reference_value_hash = :key FOR UPDATE), marked AS ( UPDATE pushed_authorization_requests AS r SET consumed_at = now(), reopenable = false, consumed_by = NULL::text, parameters = CASE WHEN NULL::text IS NULL THEN NULL ELSE r.parameters END FROM target AS t WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = :key AND true AND r.consumed_at IS NULL AND t.live AND (r.client_id IS NULL OR NULL::text IS NULL OR r.client_id = NULL::text) RETURNING 1), cleared AS ( UPDATE pushed_authorization_requests AS r SET parameters = NULL FROM target AS t WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = :key AND true AND r.consumed_at IS NOT NULL AND r.parameters IS NOT NULL AND t.live AND NOT t.in_window AND (r.client_id IS NULL OR NULL::text IS NULL OR r.client_id = NULL::text) RETURNING 1), deleted AS ( DELETE FROM pushed_authorization_requests AS r USING target AS t WHERE r.reference_value_hash = t.reference_value_hash AND r.reference_value_hash = :key AND (NOT true OR NOT t.live) AND (r.client_id IS NULL OR NULL::text IS NULL OR r.client_id = NULL::text) RETURNING 1) SELECT expires_at, parameters, client_id, consumed_at, live, (client_id IS NULL OR NULL::text IS NULL OR client_id = NULL::text) AS right_client, EXISTS (SELECT FROM marked) OR EXISTS (SELECT FROM deleted) AS taken, coalesce(consumed_at IS NOT NULL AND live AND in_window AND parameters IS NOT NULL AND consumed_by = NULL::text, false) AS reloaded FROM target;
