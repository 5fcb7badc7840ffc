-- bench/lifecycle.sql with consumed markers off: the store built with
-- consumed_markers(false) binds false as CONSUME's third parameter, so the consume deletes the
-- request and inserts no marker; store and get_by_hash are unchanged. The pgbench side of
-- BENCHMARKS.md's "markers off" row (bench/run.sh's pgbench-markers-off mode, against loadgen
-- --mode markers-off); tests/bench_script.rs pins it to src/sql.rs.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle-markers-off.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <database>
\set key random(1, 9000000000000000000)
INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) SELECT :key, CASE WHEN :expires_at::timestamptz > clock_timestamp() THEN :expires_at::timestamptz END, :params, NULL::text WHERE NOT EXISTS (SELECT FROM pushed_authorization_request_markers WHERE reference_value_hash = :key) ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > clock_timestamp();
WITH taken AS ( DELETE FROM pushed_authorization_requests WHERE reference_value_hash = :key AND (client_id IS NULL OR NULL::text IS NULL OR client_id = NULL::text) RETURNING expires_at, parameters, client_id), decided AS ( SELECT expires_at, parameters, client_id, clock_timestamp() AS decided_at FROM taken), marked AS ( INSERT INTO pushed_authorization_request_markers AS m (reference_value_hash, expires_at, client_id, consumed_at, reopenable, consumed_by, kept_parameters) SELECT :key, expires_at, client_id, decided_at, false, NULL::text, CASE WHEN NULL::text IS NOT NULL THEN parameters END FROM decided WHERE expires_at > decided_at AND false ON CONFLICT (reference_value_hash) DO NOTHING) SELECT true AS taken, expires_at, parameters, client_id, expires_at > decided_at, NULL::timestamptz AS consumed_at, false AS kept FROM decided;
