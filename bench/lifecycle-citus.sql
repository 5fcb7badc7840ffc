-- One PAR lifecycle per pgbench transaction on Citus, as the store runs it there once
-- PostgresStore::distribute_on_citus() has distributed migration 0008's functions: store is
-- CITUS_INSERT of src/sql.rs (par_store_insert), get_by_hash bench/lifecycle.sql's
-- SELECT_LIVE, and consume_by_hash CITUS_CONSUME (par_store_consume), each call delegated by
-- Citus to the worker holding the key's shard, with the store's binds (for consume_by_hash:
-- any client, consumed markers on, not reopenable, no session) written in as literals;
-- pgbench cannot bind NULL. Pinned to src/sql.rs by tests/bench_script.rs.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle-citus.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <coordinator>
--
-- bench/citus.sh runs it as the pgbench side of the store on the coordinator (on the plain
-- node, where the store keeps CONSUME, it runs bench/lifecycle.sql).
\set key random(1, 9000000000000000000)
SELECT * FROM par_store_insert(:key, :expires_at::timestamptz, :params, NULL::text);
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > clock_timestamp();
SELECT * FROM par_store_consume(:key, NULL, true, false, NULL);
