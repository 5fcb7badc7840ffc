-- The least SQL that does the store's job: one PAR lifecycle per pgbench transaction, each
-- statement autocommitted like the store's (no BEGIN), on the same (0.3) tables as
-- bench/lifecycle.sql and with the same variables. It stores a request unless its hash is
-- taken, reads it while it is live, and single-uses it: the consume deletes the row and
-- returns it, so a second consume finds nothing.
--
--   pgbench -M prepared -n -c N -j N -T T -f bench/lifecycle-least.sql \
--       -D params="<600 bytes>" -D expires_at="<timestamptz>" <database>
--
-- Why it is the limit: one statement per operation, each touching one row by its primary
-- key and nothing else (no expiry check on insert, no consumed marker, no second table, no
-- CTE), with the 600 bytes sent once. Less SQL would drop part of the job: the duplicate
-- check (ON CONFLICT), the expiry check on read, or single use (the DELETE). What it cannot
-- do is what the store's SQL adds: tell a reused request_uri from an unknown one (no
-- marker), refuse an already expired request, bind a consume to a client.
-- tests/bench_script.rs pins the three statements.
\set key random(1, 9000000000000000000)
INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters, client_id) VALUES (:key, :expires_at, :params, NULL) ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;
SELECT expires_at, parameters, client_id FROM pushed_authorization_requests WHERE reference_value_hash = :key AND expires_at > now();
DELETE FROM pushed_authorization_requests WHERE reference_value_hash = :key RETURNING expires_at, parameters, client_id;
