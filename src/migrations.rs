//! Applying the schema: par-store's migrations, with their history in
//! [`MIGRATIONS_TABLE`](crate::MIGRATIONS_TABLE), converging with a host application that
//! applies the same migrations with sqlx-cli.
//!
//! A host may run `sqlx migrate run --source <par-store>/migrations` without par-store's
//! `sqlx.toml`, which records the migrations in its own `_sqlx_migrations`. Left alone,
//! `migrate()` would then run them again and fail (`relation ... already exists`). So before
//! the migrator runs, the par-store migrations found in `_sqlx_migrations` (same version and
//! checksum, applied successfully) are copied into par-store's history; after it ran, if
//! `_sqlx_migrations` records par-store migrations at all, the ones `migrate()` applied are
//! recorded there too, so the host's next `sqlx migrate run` has nothing left to do. A host
//! history without par-store migrations is only read, never written. This works for every
//! migration, present and future, since it compares versions and checksums only.
//!
//! Everything runs on one connection of its own, closed afterwards: the notices that sqlx
//! would log at INFO on every start (`relation "_par_store_migrations" already exists,
//! skipping`) are switched off there without touching the pool's other connections.

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::sql::{
    ADOPT_HOST_HISTORY, HOST_HISTORY_EXISTS, LOCK_MIGRATIONS, MIRROR_INTO_HOST_HISTORY,
    QUIET_NOTICES, UNLOCK_MIGRATIONS,
};
use sqlx::migrate::Migrate;
use sqlx::PgConnection;

/// Applies the store's migrations on `conn`, which the caller closes afterwards (the session
/// settings and the advisory lock must not outlive the run in a pool).
pub(crate) async fn run(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(QUIET_NOTICES).execute(&mut *conn).await?;
    sqlx::query(LOCK_MIGRATIONS).execute(&mut *conn).await?;
    let outcome = run_locked(conn).await.map_err(StoreError::in_migration);
    let unlocked = sqlx::query(UNLOCK_MIGRATIONS).execute(&mut *conn).await;
    outcome?;
    unlocked?;
    Ok(())
}

async fn run_locked(conn: &mut PgConnection) -> Result<(), StoreError> {
    let migrator = PostgresStore::migrator();
    let (versions, checksums): (Vec<i64>, Vec<Vec<u8>>) = migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| (migration.version, migration.checksum.to_vec()))
        .unzip();
    let host_history: bool = sqlx::query_scalar(HOST_HISTORY_EXISTS)
        .fetch_one(&mut *conn)
        .await?;
    if host_history {
        conn.ensure_migrations_table(crate::MIGRATIONS_TABLE)
            .await?;
        sqlx::query(ADOPT_HOST_HISTORY)
            .bind(&versions)
            .bind(&checksums)
            .execute(&mut *conn)
            .await?;
    }
    migrator.run(&mut *conn).await?;
    if host_history {
        sqlx::query(MIRROR_INTO_HOST_HISTORY)
            .bind(&versions)
            .bind(&checksums)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::sql::{ADOPT_HOST_HISTORY, HOST_HISTORY_EXISTS, MIRROR_INTO_HOST_HISTORY};
    use crate::MIGRATIONS_TABLE;

    #[test]
    fn the_sql_names_both_history_tables() {
        for sql in [ADOPT_HOST_HISTORY, MIRROR_INTO_HOST_HISTORY] {
            assert!(sql.contains(&format!("{MIGRATIONS_TABLE} ")));
            assert!(sql.contains("_sqlx_migrations "));
        }
        // sqlx's default history table, as sqlx-cli uses it without a sqlx.toml.
        assert_eq!(
            sqlx::migrate::Migrator::DEFAULT.table_name,
            "_sqlx_migrations"
        );
        assert!(HOST_HISTORY_EXISTS.contains("'_sqlx_migrations'"));
    }
}
