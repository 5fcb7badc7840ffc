//! par-store on a real Citus 13.2.2 cluster (a coordinator and two workers on localhost,
//! tests/common/citus.rs): setup and migrations on a distributed table, every hot statement
//! routed by Citus to one shard (read from Citus's `EXPLAIN`), exactly one winner among
//! racers, and cleanup by many jobs across every shard.
//!
//! Where Citus is not installed (`.ci/install-citus` builds it), each test prints one line
//! "skipped: Citus not installed" and returns, except under `CI=true`, where it fails.

mod common;

use chrono::{Duration, Utc};
use common::citus::{citus, CitusSchema};
use par_store::sqlx::{self, PgConnection};
use par_store::{
    CleanupJob, CleanupOptions, CleanupStats, PostgresStore, PostgresStoreOptions,
    PushedAuthorizationRequest, PushedAuthorizationRequestStore,
    PushedAuthorizationRequestStoreExt,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

// The store's own statements, to read their plans.
#[path = "../src/sql.rs"]
#[allow(dead_code)]
mod sql;

/// A schema of this test's own on the cluster, or `None` (the test returns) without Citus.
async fn schema() -> Option<CitusSchema> {
    Some(CitusSchema::new(citus()?).await)
}

/// A store that owns its connections, on the test's schema, set up on Citus.
async fn distributed_store(schema: &CitusSchema, connections: u32) -> PostgresStore {
    let store = PostgresStoreOptions::new()
        .max_connections(connections)
        .connect_with(schema.options.clone())
        .await
        .unwrap();
    assert!(store.distribute_on_citus().await.unwrap());
    store
}

fn live(hash: &str) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash, Utc::now() + Duration::seconds(600), "p=1")
        .with_client_id("client-a")
}

/// How Citus distributes the table: (shards, workers holding them), from the coordinator's
/// metadata; `None` when the table is not distributed.
async fn distribution(conn: &mut PgConnection, table: &str) -> Option<(i64, i64)> {
    let (shards, nodes): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT s.shardid), count(DISTINCT p.nodeport) \
         FROM pg_dist_shard s JOIN pg_dist_shard_placement p USING (shardid) \
         WHERE s.logicalrelid = to_regclass($1)",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (shards > 0).then_some((shards, nodes))
}

async fn applied_versions(conn: &mut PgConnection) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _par_store_migrations WHERE success ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

fn all_versions() -> Vec<i64> {
    PostgresStore::migrator()
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect()
}

#[tokio::test]
async fn setup_distributes_the_table_once_and_keeps_the_history_on_the_coordinator() {
    let Some(schema) = schema().await else { return };
    let store = distributed_store(&schema, 2).await;
    // Idempotent: already distributed, migrations already applied.
    assert!(!store.distribute_on_citus().await.unwrap());
    store.migrate().await.unwrap();

    let mut conn = schema.connection().await;
    let table = format!("{}.pushed_authorization_requests", schema.name);
    assert_eq!(
        distribution(&mut conn, &table).await,
        Some((32, 2)),
        "32 shards on both workers"
    );
    let history = format!("{}._par_store_migrations", schema.name);
    assert_eq!(
        distribution(&mut conn, &history).await,
        None,
        "the history is no distributed table"
    );
    let local: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = to_regclass($1))",
    )
    .bind(&history)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(local, "the history is a local table of the coordinator");
    assert_eq!(applied_versions(&mut conn).await, all_versions());

    // The schema's checks reach the shards and hold there.
    let refused = sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('x', 'infinity', 'p')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("expires_at_finite"),
        "{refused}"
    );

    // And the store works on it.
    store.store(&live("setup")).await.unwrap();
    assert!(store.get_by_hash("setup").await.unwrap().is_some());
    assert!(store.consume_by_hash("setup").await.unwrap().is_some());
    assert!(store.consume_by_hash("setup").await.unwrap().is_none());
}

#[tokio::test]
async fn later_migrations_apply_to_a_distributed_table_both_ways() {
    let Some(schema) = schema().await else { return };
    let mut conn = schema.connection().await;
    let migrator = PostgresStore::migrator();
    // Distributed before the migrations after 0003 (the first schema Citus can distribute:
    // 0003 changes the key's collation, which Citus refuses on a distributed table)...
    migrator.run_to(3, &mut conn).await.unwrap();
    sqlx::query(
        "SELECT create_distributed_table('pushed_authorization_requests', 'reference_value_hash')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // ... which then apply on the distributed table, through the store; setting up on Citus
    // then distributes the markers table and the consumption function (0008).
    let store = PostgresStore::new(schema.pool(2).await);
    store.migrate().await.unwrap();
    assert_eq!(applied_versions(&mut conn).await, all_versions());
    assert!(store.distribute_on_citus().await.unwrap());
    assert!(!store.distribute_on_citus().await.unwrap());
    assert!(functions_are_delegated(&mut conn).await);
    store.store(&live("before")).await.unwrap();
    store.store(&live("consumed before")).await.unwrap();
    assert!(store
        .consume_by_hash("consumed before")
        .await
        .unwrap()
        .is_some());

    // Every later migration reverts and re-applies on the distributed table.
    migrator.undo(&mut conn, 3).await.unwrap();
    assert_eq!(applied_versions(&mut conn).await, vec![1, 2, 3]);
    migrator.run(&mut conn).await.unwrap();
    assert_eq!(applied_versions(&mut conn).await, all_versions());
    let table = format!("{}.pushed_authorization_requests", schema.name);
    assert_eq!(distribution(&mut conn, &table).await, Some((32, 2)));
    assert!(store.get_by_hash("before").await.unwrap().is_some());
    // 0008's function came back, no longer distributed: the store, which found it
    // distributed, still consumes through it (run on the coordinator then)...
    assert!(!functions_are_delegated(&mut conn).await);
    store.store(&live("between")).await.unwrap();
    assert!(store.consume_by_hash("between").await.unwrap().is_some());
    assert!(store.consume_by_hash("between").await.unwrap().is_none());
    // ... until it is distributed again.
    assert!(store.distribute_on_citus().await.unwrap());
    assert!(functions_are_delegated(&mut conn).await);
    assert!(store.consume_by_hash("before").await.unwrap().is_some());
    // 0004's check reached the shards.
    let refused = sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         VALUES ('far', '262143-06-01 00:00:00+00', 'p')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("expires_at_readable"),
        "{refused}"
    );
    println!(
        "migrations after 0003 applied, reverted and re-applied on a distributed table: {:?}",
        all_versions()
            .into_iter()
            .filter(|v| *v > 3)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_table_distributed_after_every_migration_serves_the_store() {
    let Some(schema) = schema().await else { return };
    let store = PostgresStore::new(schema.pool(2).await);
    store.migrate().await.unwrap();
    store.store(&live("early")).await.unwrap();
    // Distributing copies the rows already there into the shards.
    assert!(store.distribute_on_citus().await.unwrap());
    let mut conn = schema.connection().await;
    let table = format!("{}.pushed_authorization_requests", schema.name);
    assert_eq!(distribution(&mut conn, &table).await, Some((32, 2)));
    assert!(store.consume_by_hash("early").await.unwrap().is_some());
}

/// `EXPLAIN` of `sql` (a prepared statement with `args` as its parameters) on Citus, after
/// six executions.
/// `name` names the prepared statement, unique on the connection.
async fn citus_plan(
    conn: &mut PgConnection,
    name: &str,
    sql: &str,
    types: &str,
    args: &str,
) -> String {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE {name}({types}) AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    for _ in 0..6 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("EXECUTE {name}({args})")))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (COSTS OFF) EXECUTE {name}({args})"
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    lines.join("\n")
}

/// Whether Citus holds both functions of migration 0008 (the insert and the consumption) as
/// distributed, with their distribution argument, colocated with the requests (what
/// `distribute_on_citus` sets up).
async fn functions_are_delegated(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar(
        "SELECT count(*) = 2 FROM pg_dist_object \
         WHERE objid IN ( \
               to_regprocedure('par_store_consume(text, text, boolean, boolean, text)'), \
               to_regprocedure('par_store_insert(text, timestamptz, text, text)')) \
           AND distribution_argument_index = 0 \
           AND colocationid = (SELECT colocationid FROM pg_dist_partition \
               WHERE logicalrelid = 'pushed_authorization_requests'::regclass)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_store_and_the_consume_are_calls_delegated_to_the_worker_of_the_shard() {
    let Some(schema) = schema().await else { return };
    let store = distributed_store(&schema, 2).await;
    let mut conn = schema.connection().await;
    assert!(functions_are_delegated(&mut conn).await);
    let worker: i32 = sqlx::query_scalar(
        "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = \
         get_shard_id_for_distribution_column('pushed_authorization_requests', 'delegated')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    // Citus's EXPLAIN of each call the store sends: one task, the whole call sent to the
    // worker holding the key's shard, nothing planned on the coordinator. Read after the
    // sixth execution, as the other plans (Citus plans each call with its values).
    let calls = [
        (
            "store (CITUS_INSERT)",
            "insert_call",
            sql::CITUS_INSERT,
            "text, timestamptz, text, text",
            "'delegated', now() + interval '1 minute', 'p', 'client-a'",
            "par_store_insert",
        ),
        (
            "consume (CITUS_CONSUME)",
            "consume_call",
            sql::CITUS_CONSUME,
            "text, text, bool, bool, text",
            "'delegated', 'client-a', true, false, NULL",
            "par_store_consume",
        ),
    ];
    for (operation, name, statement, types, args, function) in calls {
        let plan = citus_plan(&mut conn, name, statement, types, args).await;
        println!("{operation}:\n{plan}\n");
        assert!(
            plan.contains("Custom Scan (Citus Adaptive)") && plan.contains("Task Count: 1"),
            "{operation} is not one task:\n{plan}"
        );
        assert!(
            plan.contains(&format!("->  Function Scan on {function}"))
                && plan.contains(&format!("port={worker} "))
                && !plan.contains("subplan")
                && !plan.contains("INSERT ... SELECT"),
            "{operation} is not delegated whole to the shard's worker (port {worker}):\n{plan}"
        );
    }
    // Plain PostgreSQL's CONSUME, for comparison: Citus plans it in distributed subplans.
    let before = citus_plan(
        &mut conn,
        "consume_statement",
        sql::CONSUME,
        "text, text, bool, bool, text",
        "'delegated', 'client-a', true, false, NULL",
    )
    .await;
    println!("consume (CONSUME):\n{before}\n");

    // Another instance's store (it did not distribute anything) finds the function
    // distributed at its first operation and consumes through it, every outcome decoded.
    let other = PostgresStoreOptions::new()
        .max_connections(2)
        .connect_with(schema.options.clone())
        .await
        .unwrap();
    store.store(&live("one")).await.unwrap();
    use par_store::Consumption;
    assert_eq!(
        other.consume_for_client("one", "client-b").await.unwrap(),
        Consumption::WrongClient
    );
    match other.consume_for_client("one", "client-a").await.unwrap() {
        Consumption::Consumed(request) => assert_eq!(request.parameters, "p=1"),
        outcome => panic!("expected Consumed, got {outcome:?}"),
    }
    assert!(matches!(
        other.consume_for_client("one", "client-a").await.unwrap(),
        Consumption::AlreadyConsumed { .. }
    ));
    assert_eq!(
        other.consume_for_client("none", "client-a").await.unwrap(),
        Consumption::NotFound
    );
    let markers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_request_markers \
         WHERE reference_value_hash = 'one'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        markers, 1,
        "the marker is on the shard beside the request's"
    );
}

#[tokio::test]
async fn a_consume_that_waited_for_the_row_past_expiry_answers_expired_on_citus() {
    // As in tests/postgres.rs: another session holds the row's lock (a `FOR UPDATE`
    // committed without a change) from before expiry until 400 ms after it; the consume,
    // delegated to the shard's worker, waits for it and must decide with the clock read
    // after the wait.
    let Some(schema) = schema().await else { return };
    let store = distributed_store(&schema, 2).await;
    let expires_at = Utc::now() + Duration::milliseconds(1500);
    store
        .store(&PushedAuthorizationRequest::new("h", expires_at, "p=1").with_client_id("client-a"))
        .await
        .unwrap();
    // The consume prepared on the store's connections, as on a running server.
    use par_store::Consumption;
    assert_eq!(
        store.consume_for_client("warm", "client-a").await.unwrap(),
        Consumption::NotFound
    );
    let until = |instant: chrono::DateTime<Utc>| {
        tokio::time::sleep((instant - Utc::now()).to_std().unwrap_or_default())
    };
    let holder_pool = schema.pool(1).await;
    let mut holder = holder_pool.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM pushed_authorization_requests WHERE reference_value_hash = $1 FOR UPDATE",
    )
    .bind("h")
    .execute(&mut *holder)
    .await
    .unwrap();
    until(expires_at - Duration::milliseconds(300)).await;
    let consuming = tokio::spawn({
        let store = store.clone();
        async move { store.consume_for_client("h", "client-a").await.unwrap() }
    });
    until(expires_at + Duration::milliseconds(100)).await;
    assert!(!consuming.is_finished(), "the consume waits for the lock");
    assert_eq!(
        store.get_by_hash("h").await.unwrap(),
        None,
        "expired meanwhile"
    );
    until(expires_at + Duration::milliseconds(400)).await;
    holder.commit().await.unwrap();
    assert_eq!(consuming.await.unwrap(), Consumption::Expired);
    // Removed as garbage, never marked.
    assert_eq!(
        store.consume_for_client("h", "client-a").await.unwrap(),
        Consumption::NotFound
    );
    holder_pool.close().await;
}

#[tokio::test]
async fn the_reads_are_routed_to_one_shard_and_every_write_runs_under_a_generic_plan() {
    let Some(schema) = schema().await else { return };
    let store = distributed_store(&schema, 2).await;
    let mut conn = schema.connection().await;
    // The reads, on the one shard of the key.
    let routed = [
        (
            "get_by_hash (SELECT_LIVE)",
            sql::SELECT_LIVE,
            "text",
            "'routed'",
        ),
        ("get_for_client (LOOK_UP)", sql::LOOK_UP, "text", "'routed'"),
    ];
    // PostgreSQL weighs a generic plan from the sixth execution of a prepared statement on:
    // run each one that often first (under the default plan_cache_mode), then read its plan.
    for (n, (operation, statement, types, args)) in routed.into_iter().enumerate() {
        let name = format!("hot_{n}");
        let plan = citus_plan(&mut conn, &name, statement, types, args).await;
        println!("{operation}:\n{plan}\n");
        assert!(
            plan.contains("Custom Scan (Citus Adaptive)") && plan.contains("Task Count: 1"),
            "{operation} is not a single-shard router query:\n{plan}"
        );
        assert!(
            !plan.contains("coordinator") && !plan.contains("INSERT ... SELECT"),
            "{operation} goes through the coordinator:\n{plan}"
        );
    }
    // The writes touch both colocated tables (the markers table too): Citus plans them in
    // steps (each step on one shard, `INSERT ... SELECT` through the coordinator), all in one
    // distributed transaction (docs/scaling.md). What is checked here is that each runs under
    // the generic plan too (the sixth execution on) and lands on the right shard; the
    // contract suite's Citus mode and the racers above check their outcomes.
    let writes = [
        (
            "store",
            sql::INSERT,
            "text, timestamptz, text, text",
            "'K', now() + interval '1 minute', 'p', 'client-a'",
        ),
        (
            "store_or_replace",
            sql::UPSERT,
            "text, timestamptz, text, text",
            "'K', now() + interval '1 minute', 'p', 'client-a'",
        ),
        (
            "consume",
            sql::CONSUME,
            "text, text, bool, bool, text",
            "'K', 'client-a', true, false, NULL",
        ),
        (
            "store (Citus)",
            sql::CITUS_INSERT,
            "text, timestamptz, text, text",
            "'K', now() + interval '1 minute', 'p', 'client-a'",
        ),
        (
            "consume (Citus)",
            sql::CITUS_CONSUME,
            "text, text, bool, bool, text",
            "'K', 'client-a', true, false, NULL",
        ),
        (
            "reload",
            sql::RELOAD,
            "text, text, int8",
            "'K', 'session-1', 30000000",
        ),
    ];
    for (n, (operation, statement, types, args)) in writes.into_iter().enumerate() {
        let name = format!("write_{n}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE {name}({types}) AS {statement}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        for i in 0..8 {
            let args = args.replace("'K'", &format!("'{operation}-{i}'"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("EXECUTE {name}({args})")))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|err| panic!("{operation}, execution {i}: {err}"));
        }
    }
    for i in 0..8 {
        for operation in ["store", "store_or_replace", "store (Citus)"] {
            let key = format!("{operation}-{i}");
            assert!(store.get_by_hash(&key).await.unwrap().is_some(), "{key}");
        }
    }
}

#[tokio::test]
async fn a_request_expired_by_the_database_clock_is_refused_and_not_stored() {
    let Some(schema) = schema().await else { return };
    let store = distributed_store(&schema, 2).await;
    let mut conn = schema.connection().await;
    // The statement itself, with an expiry in the past by the database's clock (the store
    // checks the application's clock first, so it cannot send one).
    let refused = sqlx::query(sql::INSERT)
        .bind("late")
        .bind(Utc::now() - Duration::seconds(1))
        .bind("p")
        .bind(None::<String>)
        .execute(&mut conn)
        .await
        .unwrap_err();
    let code = refused
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("23502"), "{refused}");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests WHERE reference_value_hash = 'late'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stored, 0);
    store.store(&live("late")).await.unwrap();
}

#[tokio::test]
async fn the_store_refuses_a_request_that_reaches_citus_expired() {
    // As in tests/postgres.rs: the request passes the application's clock check, then its
    // bytes are held for a second, so it reaches the coordinator 700 ms after it expired.
    let Some(schema) = schema().await else { return };
    distributed_store(&schema, 1).await;
    let proxy = common::fault::FaultProxy::in_front_of(&schema.options).await;
    let store = PostgresStoreOptions::new()
        .max_connections(1)
        .connect_with(proxy.route(&schema.options))
        .await
        .unwrap();
    store.store(&live("warm")).await.unwrap();
    let late =
        PushedAuthorizationRequest::new("late", Utc::now() + Duration::milliseconds(300), "p");
    proxy.stall();
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.store(&late).await }
    });
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    proxy.restore();
    match pending.await.unwrap() {
        Err(par_store::StoreError::InvalidInput { field, .. }) => {
            assert_eq!(field, par_store::error::InputField::ExpiresAt)
        }
        other => panic!("expected InvalidInput for expires_at, got {other:?}"),
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pushed_authorization_requests WHERE reference_value_hash = 'late'",
    )
    .fetch_one(&mut schema.connection().await)
    .await
    .unwrap();
    assert_eq!(stored, 0, "nothing stored");
    // The connection is still good.
    store.store(&live("after")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_64_racers_through_two_stores_wins_each_round() {
    const ROUNDS: usize = 500;
    const RACERS: usize = 64;
    let Some(schema) = schema().await else { return };
    let first = distributed_store(&schema, 16).await;
    let second = PostgresStoreOptions::new()
        .max_connections(16)
        .connect_with(schema.options.clone())
        .await
        .unwrap();
    let stores = [first, second];
    let started = Instant::now();
    let mut wins_per_round = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        // One hash per round: the rounds spread over every shard of both workers.
        let hash = format!("race-{round}");
        stores[round % 2].store(&live(&hash)).await.unwrap();
        let gate = Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let store = stores[racer % 2].clone();
                let gate = Arc::clone(&gate);
                let hash = hash.clone();
                tokio::spawn(async move {
                    gate.wait().await;
                    store.consume_by_hash(&hash).await.unwrap().is_some()
                })
            })
            .collect();
        let mut wins = 0;
        for racer in racers {
            wins += usize::from(racer.await.unwrap());
        }
        wins_per_round.push(wins);
    }
    println!(
        "{ROUNDS} rounds of {RACERS} racers through two stores on Citus in {:?}",
        started.elapsed()
    );
    let wrong: Vec<(usize, usize)> = wins_per_round
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, wins)| *wins != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "rounds without exactly one winner: {wrong:?}"
    );
}

/// One lifecycle after another until `stop`: store, read, consume, with fresh hashes.
fn spawn_traffic(
    store: PostgresStore,
    name: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut lifecycles = 0;
        while !stop.load(Ordering::Relaxed) {
            let hash = format!("traffic-{name}-{lifecycles}");
            store.store(&live(&hash)).await.unwrap();
            assert!(store.get_by_hash(&hash).await.unwrap().is_some());
            assert!(store.consume_by_hash(&hash).await.unwrap().is_some());
            lifecycles += 1;
        }
        lifecycles
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_cleanup_jobs_remove_every_expired_row_across_all_shards_exactly_once() {
    const EXPIRED: i64 = 100_000;
    const JOBS: usize = 4;
    let Some(schema) = schema().await else { return };
    // A cleanup statement runs one shard after another, each shard's delete a transaction of
    // its own: one cancelled by the statement timeout (5 s by default, reached on a loaded
    // machine) has removed the shards before it without counting them. Longer bounds keep
    // the count complete; the assertions below hold either way.
    let store = PostgresStoreOptions::new()
        .max_connections(12)
        .statement_timeout(Some(StdDuration::from_secs(60)))
        .operation_timeout(Some(StdDuration::from_secs(120)))
        .connect_with(schema.options.clone())
        .await
        .unwrap();
    assert!(store.distribute_on_citus().await.unwrap());
    let mut conn = schema.connection().await;
    // Behind the store's back: the store refuses to store an expired request.
    sqlx::query(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT 'old-' || n, now() - interval '1 minute' - n * interval '1 millisecond', 'expired' \
         FROM generate_series(1, $1) AS n",
    )
    .bind(EXPIRED)
    .execute(&mut conn)
    .await
    .unwrap();
    for n in 0..100 {
        store.store(&live(&format!("live-{n}"))).await.unwrap();
    }
    let shards_with_expired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_command_on_shards('pushed_authorization_requests', \
         'SELECT count(*) FROM %s WHERE expires_at <= now()') WHERE result::int8 > 0",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(shards_with_expired, 32, "expired rows on every shard");

    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..2)
        .map(|n| spawn_traffic(store.clone(), n, Arc::clone(&stop)))
        .collect();
    let started = Instant::now();
    let jobs: Vec<CleanupJob> = (0..JOBS)
        .map(|_| {
            CleanupJob::spawn(
                store.clone(),
                CleanupOptions::new()
                    .interval(StdDuration::from_millis(100))
                    .first_run_jitter(false)
                    .retry_delay(StdDuration::from_millis(50))
                    .batch_size(250),
            )
        })
        .collect();
    let expired = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pushed_authorization_requests WHERE expires_at <= now()",
        )
        .fetch_one(&mut schema.connection().await)
        .await
        .unwrap()
    };
    let deadline = Instant::now() + StdDuration::from_secs(180);
    while expired().await > 0 {
        assert!(
            Instant::now() < deadline,
            "expired rows left: {}",
            expired().await
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lifecycles = 0;
    for task in traffic {
        lifecycles += task.await.unwrap();
    }
    // Each job counts a batch as soon as it returns: wait for the batches still in flight.
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while jobs.iter().map(|j| j.stats().rows_removed).sum::<u64>() < EXPIRED as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    let stats: Vec<CleanupStats> = jobs.iter().map(CleanupJob::stats).collect();
    for job in jobs {
        job.shutdown().await;
    }
    let removed: Vec<u64> = stats.iter().map(|s| s.rows_removed).collect();
    println!(
        "{JOBS} jobs removed {} rows from 32 shards in {elapsed:?} (per job: {removed:?}) beside \
         {lifecycles} live lifecycles",
        removed.iter().sum::<u64>()
    );
    // Every expired row is gone (the loop above), the live ones stay (below), and no row is
    // counted by two jobs. The count is complete unless a pass failed midway.
    let counted = removed.iter().sum::<u64>();
    assert!(counted <= EXPIRED as u64, "rows counted twice: {stats:?}");
    if stats.iter().all(|s| s.failed_passes == 0) {
        assert_eq!(
            counted, EXPIRED as u64,
            "every expired row removed exactly once"
        );
    } else {
        println!("passes failed midway, their shards' removals not counted: {stats:?}");
    }
    assert!(lifecycles > 0);
    for n in 0..100 {
        assert!(store
            .get_by_hash(&format!("live-{n}"))
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test]
async fn delete_expired_and_delete_expired_as_of_clean_every_shard() {
    let Some(schema) = schema().await else { return };
    let store = distributed_store(&schema, 2).await;
    let mut conn = schema.connection().await;
    sqlx::raw_sql(
        "INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT 'old-' || n, now() - interval '1 minute', 'p' FROM generate_series(1, 3000) AS n; \
         INSERT INTO pushed_authorization_requests (reference_value_hash, expires_at, parameters) \
         SELECT 'soon-' || n, now() + interval '1 hour', 'p' FROM generate_series(1, 500) AS n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 3000);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    // The cutoff reaches the shards as a UTC literal, whatever the session's date style and
    // time zone.
    let pool = par_store::sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            schema
                .options
                .clone()
                .options([("DateStyle", "SQL, DMY"), ("TimeZone", "Asia/Tokyo")]),
        )
        .await
        .unwrap();
    let removed = PostgresStore::new(pool)
        .delete_expired_as_of(Utc::now() + Duration::hours(2))
        .await;
    assert_eq!(removed.unwrap(), 500);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pushed_authorization_requests")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
