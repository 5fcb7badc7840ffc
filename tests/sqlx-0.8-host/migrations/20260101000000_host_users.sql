-- The host application's own table, applied by its own sqlx 0.8 `migrate!` into `_sqlx_migrations`.
CREATE TABLE host_users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL
);
