-- The store's two hot writes as PL/pgSQL functions, par-store 0.4: what the INSERT and
-- CONSUME statements (src/sql.rs) do, step by step, so that Citus can run them on the worker
-- that holds the key's shard (PostgresStore::distribute_on_citus() distributes them,
-- colocated with the requests table, the hash as their distribution argument). Citus plans
-- both statements in distributed steps through the coordinator (each reads or writes the
-- colocated markers table beside the requests table, and reads clock_timestamp()); in these
-- functions each statement is a single-shard statement of its own, run on the shard's worker
-- when the call is delegated.
--
-- The rule CONSUME keeps is kept here: the decision is made on the row the DELETE locked,
-- with the clock read after the DELETE returned it (however long it waited for the row).
-- The columns are CONSUME's, in its order. When nothing was taken, the two reads see a
-- snapshot taken after the DELETE (each statement of a function takes its own): a
-- consumption committed meanwhile shows as its marker. par_store_insert keeps INSERT's
-- rules: a consumed marker under the hash makes it a duplicate (no row), an expires_at not
-- after the clock is refused by the NOT NULL constraint (SQLSTATE 23502), a stored request
-- under the hash makes it a duplicate (no row); one row (1) when it stored the request.
--
-- The store calls them on Citus only; on plain PostgreSQL they stay unused (INSERT and
-- CONSUME are one statement each there). Additive: an older release never calls them, and
-- 0.3 keeps serving this schema, so nothing is recorded in _par_store_compatibility.
--
-- search_path is pinned to the one this migration runs under: a call that Citus delegates
-- runs in a worker's session, whose search_path is not the application's, and the table
-- names below are unqualified (the schema is the one the migrations run in).
CREATE OR REPLACE FUNCTION par_store_insert(
    hash text, requested_expires_at timestamptz, request_parameters text,
    bound_client_id text)
RETURNS SETOF integer
LANGUAGE plpgsql
VOLATILE
SET search_path FROM CURRENT
AS $par_store_insert$
DECLARE
    stored integer;
BEGIN
    IF EXISTS (SELECT FROM pushed_authorization_request_markers AS m
               WHERE m.reference_value_hash = hash) THEN
        RETURN;
    END IF;
    INSERT INTO pushed_authorization_requests
        (reference_value_hash, expires_at, parameters, client_id)
    VALUES (hash,
        CASE WHEN requested_expires_at > clock_timestamp() THEN requested_expires_at END,
        request_parameters, bound_client_id)
    ON CONFLICT (reference_value_hash) DO NOTHING
    RETURNING 1 INTO stored;
    IF FOUND THEN
        RETURN NEXT stored;
    END IF;
END
$par_store_insert$;

CREATE OR REPLACE FUNCTION par_store_consume(
    hash text, bound_client_id text, leave_marker boolean, marker_reopenable boolean,
    session_binding text)
RETURNS TABLE (taken boolean, expires_at timestamptz, parameters text, client_id text,
    live boolean, consumed_at timestamptz, kept boolean)
LANGUAGE plpgsql
VOLATILE
SET search_path FROM CURRENT
AS $par_store_consume$
DECLARE
    taken_expires_at timestamptz;
    taken_parameters text;
    taken_client_id text;
    decided_at timestamptz;
BEGIN
    DELETE FROM pushed_authorization_requests AS r
    WHERE r.reference_value_hash = hash
      AND (r.client_id IS NULL OR bound_client_id IS NULL OR r.client_id = bound_client_id)
    RETURNING r.expires_at, r.parameters, r.client_id
    INTO taken_expires_at, taken_parameters, taken_client_id;
    IF FOUND THEN
        -- After the DELETE holds the row: the instant of the decision.
        decided_at := clock_timestamp();
        IF taken_expires_at > decided_at AND leave_marker THEN
            INSERT INTO pushed_authorization_request_markers AS m
                (reference_value_hash, expires_at, client_id, consumed_at, reopenable,
                 consumed_by, kept_parameters)
            VALUES (hash, taken_expires_at, taken_client_id, decided_at, marker_reopenable,
                session_binding,
                CASE WHEN session_binding IS NOT NULL THEN taken_parameters END)
            ON CONFLICT (reference_value_hash) DO NOTHING;
        END IF;
        RETURN QUERY SELECT true, taken_expires_at, taken_parameters, taken_client_id,
            taken_expires_at > decided_at, NULL::timestamptz, false;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT false, r.expires_at, NULL::text, r.client_id,
            r.expires_at > clock_timestamp(), NULL::timestamptz, false
        FROM pushed_authorization_requests AS r
        WHERE r.reference_value_hash = hash
        UNION ALL
        SELECT false, m.expires_at, NULL::text, m.client_id,
            m.expires_at > clock_timestamp(), m.consumed_at, m.kept_parameters IS NOT NULL
        FROM pushed_authorization_request_markers AS m
        WHERE m.reference_value_hash = hash;
END
$par_store_consume$;
