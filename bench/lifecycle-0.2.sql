-- par-store 0.2's PAR lifecycle, for bench/markers.sh: the INSERT, SELECT_LIVE and CONSUME
-- of src/sql.rs as released in 0.2.0 (commit 32b6b3f, `git show 32b6b3f:src/sql.rs`), where
-- consuming deletes the row (`DELETE ... RETURNING`) and leaves no consumed marker.
-- bench/lifecycle.sql is 0.3's lifecycle; both run on the same (0.3) table.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle-0.2.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <database>
--
-- The casts are the only change: the store binds typed parameters, pgbench untyped text, and
-- in `INSERT ... SELECT $1, $2, ...` an untyped parameter would be taken as text.
\set key random(1, 9000000000000000000)
WITH inserted AS (INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) SELECT :key::text, :expires_at::timestamptz, :params::text, NULL::text WHERE :expires_at::timestamptz > now() ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1) SELECT EXISTS (SELECT FROM inserted) AS inserted, :expires_at::timestamptz > now() AS live;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > now();
DELETE FROM pushed_authorization_requests WHERE reference_value_hash = :key RETURNING expires_at, parameters, expires_at > now() AS live, client_id;
