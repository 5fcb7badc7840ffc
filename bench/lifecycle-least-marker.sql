-- The least SQL that does the store's job *and* reports a reused request_uri: bench/lifecycle-least.sql
-- with the consumed marker, the one thing the least SQL leaves out. The consume deletes the
-- request and inserts its marker into pushed_authorization_request_markers in one statement;
-- nothing else (no expiry check on insert, no client binding, no classification of the
-- other outcomes, no clock read after the lock). It measures what the marker alone costs:
-- "least + marker / least SQL" is the most a store with markers on can reach against the
-- least SQL. tests/bench_script.rs pins the three statements.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle-least-marker.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <database>
\set key random(1, 9000000000000000000)
INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) VALUES (:key, :expires_at, :params, NULL) ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > now();
WITH taken AS (DELETE FROM pushed_authorization_requests WHERE reference_value_hash = :key RETURNING expires_at, parameters, client_id), marked AS (INSERT INTO pushed_authorization_request_markers (reference_value_hash, expires_at, client_id, consumed_at) SELECT :key, expires_at, client_id, now() FROM taken) SELECT expires_at, parameters, client_id FROM taken;
