//! The defaults tables of `PostgresStoreOptions` and `CleanupOptions` (their rustdoc, the
//! only place the defaults are written down) are pinned here: every row that names a
//! constant shows that constant's value, every constant is what `Default` uses (seen through
//! `Debug`), and every setting of the options appears in the table.

use par_store::{CleanupOptions, PostgresStoreOptions};
use std::time::Duration;

/// A duration as the tables write it: `5 s`, `60 s`, `30 min`, `1 hour`.
fn duration(d: Duration) -> String {
    assert_eq!(d.subsec_nanos(), 0, "the tables show whole seconds");
    let secs = d.as_secs();
    if secs <= 60 {
        format!("{secs} s")
    } else if secs.is_multiple_of(3600) {
        let hours = secs / 3600;
        format!("{hours} hour{}", if hours == 1 { "" } else { "s" })
    } else {
        assert_eq!(secs % 60, 0, "{d:?}");
        format!("{} min", secs / 60)
    }
}

/// `1,000` for 1000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The rows of the defaults table in a source file's rustdoc: setting -> (default, constant).
fn table(source: &str) -> Vec<(String, String, String)> {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("/// | [`"))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let name = cells[0].split('`').next().unwrap().to_owned();
            let constant = cells[2]
                .strip_prefix("[`")
                .map(|c| c.split('`').next().unwrap().to_owned())
                .unwrap_or_default();
            (name, cells[1].to_owned(), constant)
        })
        .collect()
}

/// Checks a table against (setting, constant, rendered value, what `Debug` shows of the
/// default) and the options' `Debug` against the same.
fn check(source: &str, debug: &str, expected: &[(&str, &str, String, String)]) {
    let rows = table(source);
    let settings: Vec<&str> = rows.iter().map(|(name, _, _)| name.as_str()).collect();
    for (setting, constant, shown, in_debug) in expected {
        let (_, default, named) = rows
            .iter()
            .find(|(name, _, _)| name == setting)
            .unwrap_or_else(|| panic!("{setting} is missing from the table: {settings:?}"));
        assert_eq!(default, shown, "{setting}: the table's default");
        assert_eq!(named, constant, "{setting}: the table's constant");
        let field = format!("{setting}: {in_debug}");
        assert!(
            debug.contains(&field),
            "{setting}: Default is not {constant}: expected `{field}` in {debug}"
        );
    }
    // Every row is checked (no setting left out of `expected`), and every field of the
    // options' Debug has a row.
    assert_eq!(rows.len(), expected.len(), "{settings:?}");
    let fields = debug[debug.find('{').unwrap() + 1..debug.rfind('}').unwrap()]
        .split(", ")
        .map(|field| field.split(':').next().unwrap().trim().to_owned());
    for field in fields {
        assert!(settings.contains(&field.as_str()), "{field} has no row");
    }
}

#[test]
fn postgres_store_options_defaults_are_the_documented_constants() {
    let source = include_str!("../src/postgres.rs");
    let debug = format!("{:?}", PostgresStoreOptions::default());
    let some = |d: Duration| format!("Some({d:?})");
    let expected = [
        (
            "max_connections",
            "DEFAULT_MAX_CONNECTIONS",
            PostgresStoreOptions::DEFAULT_MAX_CONNECTIONS.to_string(),
            format!("{:?}", PostgresStoreOptions::DEFAULT_MAX_CONNECTIONS),
        ),
        (
            "acquire_timeout",
            "DEFAULT_ACQUIRE_TIMEOUT",
            duration(PostgresStoreOptions::DEFAULT_ACQUIRE_TIMEOUT),
            format!("{:?}", PostgresStoreOptions::DEFAULT_ACQUIRE_TIMEOUT),
        ),
        (
            "statement_timeout",
            "DEFAULT_STATEMENT_TIMEOUT",
            duration(PostgresStoreOptions::DEFAULT_STATEMENT_TIMEOUT),
            some(PostgresStoreOptions::DEFAULT_STATEMENT_TIMEOUT),
        ),
        (
            "operation_timeout",
            "DEFAULT_OPERATION_TIMEOUT",
            duration(PostgresStoreOptions::DEFAULT_OPERATION_TIMEOUT),
            some(PostgresStoreOptions::DEFAULT_OPERATION_TIMEOUT),
        ),
        (
            "migration_lock_timeout",
            "DEFAULT_MIGRATION_LOCK_TIMEOUT",
            duration(PostgresStoreOptions::DEFAULT_MIGRATION_LOCK_TIMEOUT),
            some(PostgresStoreOptions::DEFAULT_MIGRATION_LOCK_TIMEOUT),
        ),
        (
            "ping_idle_after",
            "DEFAULT_PING_IDLE_AFTER",
            duration(PostgresStoreOptions::DEFAULT_PING_IDLE_AFTER),
            some(PostgresStoreOptions::DEFAULT_PING_IDLE_AFTER),
        ),
        (
            "max_connection_lifetime",
            "DEFAULT_MAX_CONNECTION_LIFETIME",
            duration(PostgresStoreOptions::DEFAULT_MAX_CONNECTION_LIFETIME),
            some(PostgresStoreOptions::DEFAULT_MAX_CONNECTION_LIFETIME),
        ),
        (
            "idle_timeout",
            "DEFAULT_IDLE_TIMEOUT",
            duration(PostgresStoreOptions::DEFAULT_IDLE_TIMEOUT),
            some(PostgresStoreOptions::DEFAULT_IDLE_TIMEOUT),
        ),
        ("pooler_mode", "", "`false`".to_owned(), "false".to_owned()),
        (
            "max_parameters_len",
            "DEFAULT_MAX_PARAMETERS_LEN",
            format!(
                "{} KiB",
                PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN / 1024
            ),
            format!("{:?}", PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN),
        ),
        (
            "max_request_lifetime",
            "DEFAULT_MAX_REQUEST_LIFETIME",
            duration(PostgresStoreOptions::DEFAULT_MAX_REQUEST_LIFETIME),
            format!("{:?}", PostgresStoreOptions::DEFAULT_MAX_REQUEST_LIFETIME),
        ),
        (
            "consumed_markers",
            "",
            "`true`".to_owned(),
            "true".to_owned(),
        ),
        (
            "consume_policy",
            "",
            "[`ConsumePolicy::Once`]".to_owned(),
            "Once".to_owned(),
        ),
        ("hosts", "", "none".to_owned(), "[]".to_owned()),
        (
            "target_session_attrs",
            "",
            "the URL's, else [`TargetSessionAttrs::Any`]".to_owned(),
            "None".to_owned(),
        ),
    ];
    check(source, &debug, &expected);
    assert_eq!(PostgresStoreOptions::DEFAULT_MAX_PARAMETERS_LEN % 1024, 0);
}

#[test]
fn cleanup_options_defaults_are_the_documented_constants() {
    let source = include_str!("../src/cleanup.rs");
    let debug = format!("{:?}", CleanupOptions::default());
    let expected = [
        (
            "interval",
            "DEFAULT_INTERVAL",
            duration(CleanupOptions::DEFAULT_INTERVAL),
            format!("{:?}", CleanupOptions::DEFAULT_INTERVAL),
        ),
        (
            "batch_size",
            "DEFAULT_BATCH_SIZE",
            format!(
                "{} rows",
                thousands(CleanupOptions::DEFAULT_BATCH_SIZE.into())
            ),
            format!("{:?}", CleanupOptions::DEFAULT_BATCH_SIZE),
        ),
        (
            "first_run_jitter",
            "",
            "`true`".to_owned(),
            "true".to_owned(),
        ),
        (
            "pause_between_batches",
            "DEFAULT_PAUSE_BETWEEN_BATCHES",
            duration(CleanupOptions::DEFAULT_PAUSE_BETWEEN_BATCHES),
            format!("{:?}", CleanupOptions::DEFAULT_PAUSE_BETWEEN_BATCHES),
        ),
        (
            "retry_delay",
            "DEFAULT_RETRY_DELAY",
            duration(CleanupOptions::DEFAULT_RETRY_DELAY),
            format!("{:?}", CleanupOptions::DEFAULT_RETRY_DELAY),
        ),
    ];
    check(source, &debug, &expected);
}

/// `PostgresStoreOptions::new()` is the same as `default()`.
#[test]
fn new_options_are_the_defaults() {
    assert_eq!(
        format!("{:?}", PostgresStoreOptions::new()),
        format!("{:?}", PostgresStoreOptions::default())
    );
    assert_eq!(
        format!("{:?}", CleanupOptions::new()),
        format!("{:?}", CleanupOptions::default())
    );
}
