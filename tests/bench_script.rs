//! `bench/lifecycle.sql`, the pgbench side of every store-vs-pgbench ratio in BENCHMARKS.md,
//! runs the store's own statements: each of its three lines is the statement of `src/sql.rs`
//! with the store's binds for `store`, `get_by_hash` and `consume_by_hash` written in as
//! pgbench variables or literals (pgbench cannot bind NULL). When a statement of `src/sql.rs`
//! changes, this fails until the script is changed with it; a ratio against a stale script
//! compares the store with less work than it does.
//!
//! `bench/lifecycle-markers-off.sql` is the same lifecycle as a store built with
//! `consumed_markers(false)` runs it (the consume's markers bind false).
//!
//! `bench/lifecycle-least.sql`, the other baseline, is pinned to the three least statements
//! that store, read and single-use a request, so that "store / least SQL" keeps meaning the
//! same thing.

#[path = "../src/sql.rs"]
#[allow(dead_code)] // only the three lifecycle statements are compared
mod sql;

/// `statement` with each `$n` replaced by `binds[n - 1]`.
fn substitute(statement: &str, binds: &[&str]) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut rest = statement;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        let n: usize = rest[at + 1..at + 1 + digits]
            .parse()
            .expect("a $ in src/sql.rs is a bind parameter");
        out.push_str(binds[n - 1]);
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn lifecycle_sql_runs_the_statements_of_src_sql_rs() {
    // consume_by_hash with the default options: consumed markers on.
    assert_runs_the_store_statements(
        "bench/lifecycle.sql",
        include_str!("../bench/lifecycle.sql"),
        "true",
    );
}

#[test]
fn lifecycle_markers_off_sql_runs_the_statements_of_a_store_without_markers() {
    // consume_by_hash with consumed_markers(false) (loadgen --mode markers-off).
    assert_runs_the_store_statements(
        "bench/lifecycle-markers-off.sql",
        include_str!("../bench/lifecycle-markers-off.sql"),
        "false",
    );
    assert!(
        include_str!("../bench/lifecycle-markers-off.sql")
            .contains("\\set key random(1, 9000000000000000000)"),
        "bench/lifecycle-markers-off.sql draws its keys as bench/lifecycle.sql does"
    );
}

#[test]
fn lifecycle_citus_sql_runs_the_statements_of_a_store_on_citus() {
    // store and consume_by_hash on Citus, the functions distributed: CITUS_INSERT and
    // CITUS_CONSUME, markers on.
    assert_runs_statements(
        "bench/lifecycle-citus.sql",
        include_str!("../bench/lifecycle-citus.sql"),
        (sql::CITUS_INSERT, sql::CITUS_CONSUME),
        "true",
    );
    assert!(
        include_str!("../bench/lifecycle-citus.sql")
            .contains("\\set key random(1, 9000000000000000000)"),
        "bench/lifecycle-citus.sql draws its keys as bench/lifecycle.sql does"
    );
}

/// `script` holds the store's three lifecycle statements of `src/sql.rs`, with the binds of
/// `store`, `get_by_hash` and `consume_by_hash` (consumed markers bound as `markers`).
fn assert_runs_the_store_statements(name: &str, script: &str, markers: &str) {
    assert_runs_statements(name, script, (sql::INSERT, sql::CONSUME), markers);
}

/// `script` holds `get_by_hash`'s statement of `src/sql.rs` and `writes`, the insert and the
/// consume statements (`INSERT` and `CONSUME`, or on Citus `CITUS_INSERT` and
/// `CITUS_CONSUME`), with the binds of `store` and `consume_by_hash` (consumed markers bound
/// as `markers`).
fn assert_runs_statements(name: &str, script: &str, writes: (&str, &str), markers: &str) {
    let (insert, consume) = writes;
    let statements = statement_lines(script);
    let expected = [
        // store: the key, the expiry (typed as the store binds it), 600 bytes, no client.
        substitute(
            insert,
            &[":key", ":expires_at::timestamptz", ":params", "NULL::text"],
        ),
        // get_by_hash
        substitute(sql::SELECT_LIVE, &[":key"]),
        // consume_by_hash: any client, markers as given, not reopenable, no session.
        substitute(consume, &[":key", "NULL", markers, "false", "NULL"]),
    ];
    assert_eq!(
        statements.len(),
        expected.len(),
        "{name} holds one line per statement: {statements:#?}"
    );
    for (line, statement) in statements.iter().zip(&expected) {
        assert_eq!(
            words(line),
            format!("{};", words(statement)),
            "{name} differs from src/sql.rs"
        );
    }
}

/// The statement lines of a pgbench script (no comments, no meta-commands).
fn statement_lines(script: &str) -> Vec<&str> {
    script
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("--"))
        .filter(|line| !line.starts_with('\\'))
        .collect()
}

#[test]
fn lifecycle_least_sql_runs_the_three_least_statements() {
    let script = include_str!("../bench/lifecycle-least.sql");
    let expected = [
        "INSERT INTO pushed_authorization_requests \
         (reference_value_hash, expires_at, parameters, client_id) \
         VALUES (:key, :expires_at, :params, NULL) \
         ON CONFLICT (reference_value_hash) DO NOTHING RETURNING 1;",
        "SELECT expires_at, parameters, client_id FROM pushed_authorization_requests \
         WHERE reference_value_hash = :key AND expires_at > now();",
        "DELETE FROM pushed_authorization_requests WHERE reference_value_hash = :key \
         RETURNING expires_at, parameters, client_id;",
    ];
    let statements = statement_lines(script);
    assert_eq!(
        statements
            .iter()
            .map(|line| words(line))
            .collect::<Vec<_>>(),
        expected.iter().map(|line| words(line)).collect::<Vec<_>>(),
        "bench/lifecycle-least.sql is not the three least statements"
    );
    assert!(
        script.contains("\\set key random(1, 9000000000000000000)"),
        "bench/lifecycle-least.sql draws its keys as bench/lifecycle.sql does"
    );
}

#[test]
fn lifecycle_least_marker_sql_is_the_least_sql_with_the_marker() {
    let least = statement_lines(include_str!("../bench/lifecycle-least.sql"));
    let script = include_str!("../bench/lifecycle-least-marker.sql");
    let statements = statement_lines(script);
    assert_eq!(statements.len(), 3, "{statements:?}");
    assert_eq!(
        words(statements[0]),
        words(least[0]),
        "the least SQL's insert"
    );
    assert_eq!(
        words(statements[1]),
        words(least[1]),
        "the least SQL's read"
    );
    assert_eq!(
        words(statements[2]),
        words(
            "WITH taken AS (DELETE FROM pushed_authorization_requests \
             WHERE reference_value_hash = :key RETURNING expires_at, parameters, client_id), \
             marked AS (INSERT INTO pushed_authorization_request_markers \
             (reference_value_hash, expires_at, client_id, consumed_at) \
             SELECT :key, expires_at, client_id, now() FROM taken) \
             SELECT expires_at, parameters, client_id FROM taken;"
        ),
        "the least SQL's DELETE, with the marker inserted beside it"
    );
    assert!(script.contains("\\set key random(1, 9000000000000000000)"));
}

#[test]
fn substitute_replaces_every_parameter_once() {
    assert_eq!(
        substitute("a = $1 AND b = $2::text OR c = $1", &["x", "NULL"]),
        "a = x AND b = NULL::text OR c = x"
    );
    assert_eq!(
        substitute("$10", &["", "", "", "", "", "", "", "", "", "ten"]),
        "ten"
    );
}
