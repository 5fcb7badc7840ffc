//! Applying the schema: par-store's migrations, with their history in
//! [`MIGRATIONS_TABLE`](crate::PostgresStore::MIGRATIONS_TABLE), converging with a host application that
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
//! Everything runs on one session of its own, closed afterwards, with settings of its own
//! ([`MIGRATION_SESSION`]): no statement timeout, a `lock_timeout` instead, and the notices
//! that sqlx would log at INFO on every start (`relation "_par_store_migrations" already
//! exists, skipping`) switched off, without touching the store's other connections.

use crate::error::StoreError;
use crate::sql::{
    ADOPT_HOST_HISTORY, COMPATIBILITY, COMPATIBILITY_EXISTS, HOST_HISTORY_EXISTS, LOCK_MIGRATIONS,
    MIGRATION_BLOCK_END, MIGRATION_BLOCK_START, MIGRATION_SESSION, MIRROR_INTO_HOST_HISTORY,
    UNLOCK_MIGRATIONS,
};
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::PgConnection;
use sqlx::{SqlSafeStr, SqlStr};
use std::time::Duration;

/// The table in which par-store records its applied migrations, apart from the host
/// application's `_sqlx_migrations`. `sqlx.toml` names the same table for sqlx-cli.
pub(crate) const MIGRATIONS_TABLE: &str = "_par_store_migrations";

/// `(name, contents)` of one file in `migrations/`.
macro_rules! migration_file {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $name)),
        )
    };
}

/// par-store's migration files, embedded in the binary: `(file name, contents)`, in the
/// order of their versions. Listed by hand rather than with `sqlx::migrate!`, whose proc macro
/// (`sqlx-macros`) compiles sqlx and tokio a second time for the build host: a third of a
/// consumer's cold build (129 s of CPU against 85 s without it). `tests/migrations.rs`
/// checks that this list is exactly `migrations/` as sqlx-cli reads it (same versions,
/// descriptions and checksums).
const MIGRATION_FILES: &[(&str, &str)] = &[
    migration_file!("0001_create_pushed_authorization_requests.up.sql"),
    migration_file!("0001_create_pushed_authorization_requests.down.sql"),
    migration_file!("0002_client_binding.up.sql"),
    migration_file!("0002_client_binding.down.sql"),
    migration_file!("0003_schema_checks.up.sql"),
    migration_file!("0003_schema_checks.down.sql"),
    migration_file!("0004_expires_at_range.up.sql"),
    migration_file!("0004_expires_at_range.down.sql"),
    migration_file!("0005_consumed_markers.up.sql"),
    migration_file!("0005_consumed_markers.down.sql"),
    migration_file!("0006_reload_tolerance.up.sql"),
    migration_file!("0006_reload_tolerance.down.sql"),
    migration_file!("0007_markers_apart.up.sql"),
    migration_file!("0007_markers_apart.down.sql"),
    migration_file!("0008_citus_functions.up.sql"),
    migration_file!("0008_citus_functions.down.sql"),
];

/// One migration from its file, as sqlx-cli reads it (`sqlx_core::migrate::source`): the
/// version before the first `_`, the rest without its suffix and with `_` as spaces for the
/// description, the type from the suffix, the checksum (SHA-384) of the file's contents, and
/// `-- no-transaction` at the start to run it outside a transaction. `None` for a name that
/// is not `<version>_<description>.sql`.
fn migration_from_file(name: &'static str, sql: &'static str) -> Option<Migration> {
    let (version, rest) = name.split_once('_')?;
    let version = version.parse::<i64>().ok()?;
    if !rest.ends_with(".sql") {
        return None;
    }
    let migration_type = MigrationType::from_filename(rest);
    let description = rest
        .trim_end_matches(migration_type.suffix())
        .replace('_', " ");
    Some(Migration::new(
        version,
        description.into(),
        migration_type,
        SqlStr::from_static(sql),
        sql.starts_with("-- no-transaction"),
    ))
}

/// `PostgresStore::migrator`: the embedded migrations, one statement each, their history in
/// [`MIGRATIONS_TABLE`].
pub(crate) fn migrator() -> Migrator {
    let migrations = MIGRATION_FILES
        .iter()
        .filter_map(|(name, sql)| migration_from_file(name, sql))
        .map(|mut migration| {
            // The checksum stays the file's (what sqlx-cli records); only the statement sent
            // is wrapped. Only our own embedded files go in here, never input.
            let sql = [
                MIGRATION_BLOCK_START,
                migration.sql.as_str(),
                MIGRATION_BLOCK_END,
            ]
            .concat();
            migration.sql = sqlx::AssertSqlSafe(sql).into_sql_str();
            migration
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Applies the store's migrations on `conn`, which the caller closes afterwards (the session
/// settings and the advisory lock must not outlive the run in a pool). `lock_timeout` bounds
/// each lock wait (`None`: no bound).
pub(crate) async fn run(
    conn: &mut PgConnection,
    lock_timeout: Option<Duration>,
) -> Result<(), StoreError> {
    // PostgreSQL reads '0' as "no limit": a bound below a millisecond is rounded up.
    let lock_timeout_setting = match lock_timeout {
        Some(limit) => format!("{}ms", limit.as_millis().max(1)),
        None => "0".to_owned(),
    };
    sqlx::query(MIGRATION_SESSION)
        .bind(lock_timeout_setting)
        .execute(&mut *conn)
        .await?;
    sqlx::query(LOCK_MIGRATIONS)
        .execute(&mut *conn)
        .await
        .map_err(|err| waiting_for_the_lock(err, lock_timeout))?;
    let outcome = run_locked(conn).await.map_err(StoreError::in_migration);
    let unlocked = sqlx::query(UNLOCK_MIGRATIONS).execute(&mut *conn).await;
    outcome?;
    unlocked?;
    Ok(())
}

/// PostgreSQL's `lock_not_available`, which `lock_timeout` raises.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn is_lock_timeout(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == LOCK_NOT_AVAILABLE)
}

/// The wait for par-store's migration lock outlasted the migration lock timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "another migration run held par-store's migration lock \
     (pg_advisory_lock(7236905154372315439)) for longer than the migration lock timeout \
     ({limit:?}); nothing was applied"
)]
struct LockWaitTimedOut {
    limit: Duration,
    #[source]
    source: sqlx::Error,
}

/// `err` from taking par-store's migration lock, saying so when the wait timed out.
fn waiting_for_the_lock(err: sqlx::Error, lock_timeout: Option<Duration>) -> StoreError {
    match lock_timeout {
        Some(limit) if is_lock_timeout(&err) => StoreError::Migration {
            source: Box::new(LockWaitTimedOut { limit, source: err }),
        },
        _ => StoreError::from(err),
    }
}

async fn run_locked(conn: &mut PgConnection) -> Result<(), StoreError> {
    let migrator = migrator();
    let (versions, checksums): (Vec<i64>, Vec<Vec<u8>>) = migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| (migration.version, migration.checksum.to_vec()))
        .unzip();
    let host_history: bool = sqlx::query_scalar(HOST_HISTORY_EXISTS)
        .fetch_one(&mut *conn)
        .await?;
    if host_history {
        conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
        sqlx::query(ADOPT_HOST_HISTORY)
            .bind(&versions)
            .bind(&checksums)
            .execute(&mut *conn)
            .await?;
    }
    let mut migrator = migrator;
    if check_compatibility(conn, &versions).await? == History::HasLaterMigrations {
        // Every applied version this release does not know is later than its own (checked):
        // sqlx may skip them. Checksums of the ones it knows are still compared.
        migrator.set_ignore_missing(true);
    }
    // `run_direct` is what `run` calls; called directly, the future of `migrate()` is `Send`
    // (through `run`'s `Acquire` bound it is not: "not general enough"), so it can be spawned.
    migrator.run_direct(None, &mut *conn, false).await?;
    if host_history {
        sqlx::query(MIRROR_INTO_HOST_HISTORY)
            .bind(&versions)
            .bind(&checksums)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What the applied history holds besides this release's migrations.
#[derive(Debug, PartialEq, Eq)]
enum History {
    /// Nothing else.
    Known,
    /// Migrations of a later release, which declared that this release can serve the schema.
    HasLaterMigrations,
}

/// Expand/contract across releases (docs/upgrading.md): the schema may hold migrations of a
/// later release (a rollback, or an older instance restarting mid-deploy). They are accepted
/// unless a migration recorded in `_par_store_compatibility` that this release is too old to
/// serve the schema, which is refused with [`StoreError::IncompatibleSchema`] before anything
/// is applied. An applied version that is not this release's and not later than its newest
/// (a removed or renamed migration) is left to sqlx, which refuses it.
async fn check_compatibility(
    conn: &mut PgConnection,
    known_versions: &[i64],
) -> Result<History, StoreError> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    let applied = conn.list_applied_migrations(MIGRATIONS_TABLE).await?;
    let newest_known = known_versions.iter().copied().max().unwrap_or(0);
    let schema_version = applied.iter().map(|m| m.version).max().unwrap_or(0);
    let unknown = applied
        .iter()
        .map(|m| m.version)
        .filter(|version| !known_versions.contains(version));
    let mut later = false;
    for version in unknown {
        if version <= newest_known {
            // Missing, not later: sqlx reports it (VersionMissing).
            return Ok(History::Known);
        }
        later = true;
    }
    let recorded: bool = sqlx::query_scalar(COMPATIBILITY_EXISTS)
        .fetch_one(&mut *conn)
        .await?;
    if recorded {
        let floors: Vec<(i64, String)> =
            sqlx::query_as(COMPATIBILITY).fetch_all(&mut *conn).await?;
        let this_release = env!("CARGO_PKG_VERSION");
        if let Some(oldest_release) = oldest_release_serving(&floors, this_release) {
            return Err(StoreError::IncompatibleSchema {
                schema_version,
                oldest_release,
                this_release,
            });
        }
    }
    Ok(if later {
        History::HasLaterMigrations
    } else {
        History::Known
    })
}

/// The oldest release the record requires when it is newer than `this_release`, else
/// `None`. A release that cannot be read as `MAJOR.MINOR.PATCH` is taken as newer than
/// anything (the schema's own CHECK refuses such a row).
fn oldest_release_serving(floors: &[(i64, String)], this_release: &str) -> Option<String> {
    let this = release_number(this_release)?;
    floors
        .iter()
        .filter(|(_, floor)| release_number(floor).is_none_or(|floor| floor > this))
        .max_by_key(|(_, floor)| release_number(floor).unwrap_or((u64::MAX, 0, 0)))
        .map(|(_, floor)| floor.clone())
}

/// `MAJOR.MINOR.PATCH` (a pre-release or build suffix is ignored).
fn release_number(release: &str) -> Option<(u64, u64, u64)> {
    let core = release.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(str::parse::<u64>);
    let number = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    parts.next().is_none().then_some(number)
}

#[cfg(test)]
mod tests {
    use super::{oldest_release_serving, release_number, MIGRATIONS_TABLE};
    use crate::sql::{ADOPT_HOST_HISTORY, HOST_HISTORY_EXISTS, MIRROR_INTO_HOST_HISTORY};

    #[test]
    fn a_release_is_compared_by_its_numbers() {
        assert_eq!(release_number("0.3.0"), Some((0, 3, 0)));
        assert_eq!(release_number("1.10.2-rc.1"), Some((1, 10, 2)));
        assert_eq!(release_number("1.2"), None);
        assert_eq!(release_number("1.2.3.4"), None);
        let floors = |list: &[&str]| -> Vec<(i64, String)> {
            list.iter()
                .enumerate()
                .map(|(n, f)| (n as i64, (*f).to_owned()))
                .collect()
        };
        assert_eq!(oldest_release_serving(&floors(&[]), "0.3.0"), None);
        assert_eq!(oldest_release_serving(&floors(&["0.3.0"]), "0.3.0"), None);
        assert_eq!(
            oldest_release_serving(&floors(&["0.2.0", "0.10.0", "0.4.1"]), "0.3.0"),
            Some("0.10.0".to_owned())
        );
        assert_eq!(
            oldest_release_serving(&floors(&["garbage"]), "0.3.0"),
            Some("garbage".to_owned())
        );
    }

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
