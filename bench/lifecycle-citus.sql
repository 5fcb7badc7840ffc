-- One PAR lifecycle per pgbench transaction on Citus, as the store runs it there once
-- PostgresStore::distribute_on_citus() has distributed migration 0008's par_store_consume:
-- store and get_by_hash are bench/lifecycle.sql's INSERT and SELECT_LIVE; consume_by_hash is
-- CITUS_CONSUME of src/sql.rs, the call Citus delegates to the worker holding the key's shard,
-- with the store's binds for consume_by_hash (any client, consumed markers on, not
-- reopenable, no session) written in as literals; pgbench cannot bind NULL. Pinned to
-- src/sql.rs by tests/bench_script.rs.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle-citus.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <coordinator>
--
-- bench/citus.sh runs it as the pgbench side of the store on the coordinator (on the plain
-- node, where the store keeps CONSUME, it runs bench/lifecycle.sql).
\set key random(1, 9000000000000000000)
INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) SELECT :key, CASE WHEN :expires_at::timestamptz > clock_timestamp() THEN :expires_at::timestamptz END, :params, NULL::text WHERE NOT EXISTS (SELECT FROM pushed_authorization_request_markers WHERE reference_value_hash = :key) ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > clock_timestamp();
SELECT * FROM par_store_consume(:key, NULL, true, false, NULL);
