-- par-store: least-privilege roles for PostgreSQL.
--
-- Two roles: an owner that applies the migrations and owns the table, and the runtime role
-- the authorization server connects as, which can read, insert, consume and delete requests
-- and nothing else. Replace the role names and passwords; run each step as stated.
-- tests/security.rs runs this very file (with unique names) and checks both roles.

-- Step 1, once, as a superuser (or a role with CREATEROLE that owns the schema), connected
-- to the application's database:
CREATE ROLE par_store_owner LOGIN PASSWORD 'change-me-owner';
CREATE ROLE par_store_runtime LOGIN PASSWORD 'change-me-runtime';
-- PostgreSQL 15 no longer lets every role create tables in "public"; on older versions this
-- takes that right away from the runtime role (and everyone else).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO par_store_owner;
GRANT USAGE ON SCHEMA public TO par_store_runtime;
-- Whenever PostgreSQL logs a statement (log_statement, log_min_duration_statement) it logs
-- its bind parameters in full by default: keep the runtime role's requests out of the server
-- log. (A superuser setting; skip it if you are not one, and keep statement logging off.)
ALTER ROLE par_store_runtime SET log_parameter_max_length = 0;

-- Step 2, as par_store_owner: apply the migrations, with PostgresStore::migrate() or
-- `sqlx migrate run` (sqlx-cli reads sqlx.toml, which names the _par_store_migrations table).

-- Step 3, as par_store_owner, after the migrations:
GRANT SELECT, INSERT, DELETE
    ON pushed_authorization_requests, pushed_authorization_request_markers
    TO par_store_runtime;
-- Cleanup (delete_expired, CleanupJob) locks the rows it removes with
-- SELECT ... FOR UPDATE SKIP LOCKED, so that many cleaners and consumers never wait for one
-- another, and store_or_replace locks the request it replaces; PostgreSQL allows row locks
-- only to roles with UPDATE on at least one column. created_at is only for operators: the
-- store never decides on it. Without this grant cleanup fails with StoreError::Database
-- (permission denied).
GRANT UPDATE (created_at) ON pushed_authorization_requests TO par_store_runtime;
-- Consuming a request moves it into pushed_authorization_request_markers (migration 0007).
-- Under a reload window (ConsumePolicy::ReloadWithin) a marker keeps the parameters for the
-- session that consumed it; the first consumption after the window clears them, after
-- locking the marker. The role cannot rewrite a marker's consumed_at, binding or expiry.
GRANT UPDATE (kept_parameters) ON pushed_authorization_request_markers TO par_store_runtime;

-- Step 4, only where the server calls store_or_replace (par_store::oauth_as does, for
-- oauth-as's "insert or replace"), as par_store_owner: INSERT ... ON CONFLICT DO UPDATE needs
-- UPDATE on the columns it sets. This lets the runtime role rewrite a request's expiry and
-- parameters in place, which it could already do by deleting and inserting the row; the key
-- (reference_value_hash) stays out of its reach.
GRANT UPDATE (expires_at, parameters, client_id) ON pushed_authorization_requests TO par_store_runtime;

-- A later migration that adds a table needs its own GRANT in step 3.
