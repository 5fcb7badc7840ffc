//! Replay detection under contention, on PostgreSQL: many racers presenting one
//! `request_uri` at once, through two store instances (each with its own pool, as two server
//! instances would have). Exactly one consumes it; every other one is told it was consumed,
//! and a racer for another client never consumes it. Under a reload window
//! (`ConsumePolicy::ReloadWithin`) only the session of the first consumption gets it again.

mod common;

use chrono::{Duration, Utc};
use common::{hash, TestDb};
use par_store::sqlx;
use par_store::{
    ConsumePolicy, Consumption, PostgresStore, PostgresStoreOptions, PushedAuthorizationRequest,
    PushedAuthorizationRequestStore,
};
use std::sync::Arc;
use std::time::Instant;

const RACERS: usize = 64;
const ROUNDS: u32 = 500;

/// Two instances on the test database, each with its own pool.
async fn two_instances(db: &TestDb) -> [PostgresStore; 2] {
    two_instances_with(db, PostgresStoreOptions::new()).await
}

/// Two instances with `options`, each with its own pool.
async fn two_instances_with(db: &TestDb, options: PostgresStoreOptions) -> [PostgresStore; 2] {
    let options = options.max_connections(16);
    let connect =
        |name: &'static str| options.connect_with(db.options.clone().application_name(name));
    [
        connect("replay-a").await.unwrap(),
        connect("replay-b").await.unwrap(),
    ]
}

fn request(n: u32) -> PushedAuthorizationRequest {
    PushedAuthorizationRequest::new(hash(n), Utc::now() + Duration::seconds(600), "p=1")
        .with_client_id("client-a")
}

/// One round: every racer waits at a barrier, then runs `attempt(store, racer)` on the
/// instance of its parity; the outcomes, by racer.
async fn race<F, Fut>(stores: &[PostgresStore; 2], attempt: F) -> Vec<Consumption>
where
    F: Fn(PostgresStore, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Consumption> + Send,
{
    let attempt = Arc::new(attempt);
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|racer| {
            let store = stores[racer % 2].clone();
            let barrier = Arc::clone(&barrier);
            let attempt = Arc::clone(&attempt);
            tokio::spawn(async move {
                barrier.wait().await;
                attempt(store, racer).await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(RACERS);
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_64_racers_on_two_instances_exactly_one_consumes_and_63_find_it_consumed() {
    let db = TestDb::new().await;
    let stores = two_instances(&db).await;
    let started = Instant::now();
    let (mut consumed, mut already, mut by_instance) = (0u32, 0u32, [0u32; 2]);
    for round in 0..ROUNDS {
        stores[0].store(&request(round)).await.unwrap();
        // Half the racers call consume_in_session (one session each: under the default
        // policy it consumes as consume_for_client does), half consume_for_client, with the
        // right client.
        let outcomes = race(&stores, move |store, racer| async move {
            if racer % 4 < 2 {
                store
                    .consume_in_session(&hash(round), "client-a", &format!("session-{racer}"))
                    .await
                    .unwrap()
            } else {
                store
                    .consume_for_client(&hash(round), "client-a")
                    .await
                    .unwrap()
            }
        })
        .await;
        let mut winners = Vec::new();
        let mut instants = Vec::new();
        for (racer, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Consumption::Consumed(got) => {
                    assert_eq!(got, request(round).with_expiry_of(&got), "round {round}");
                    winners.push(racer);
                }
                Consumption::AlreadyConsumed { consumed_at } => instants.push(consumed_at),
                other => panic!("round {round}, racer {racer}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert_eq!(instants.len(), RACERS - 1, "round {round}");
        // Every loser saw the one consumption, at one instant.
        assert!(
            instants.windows(2).all(|pair| pair[0] == pair[1]),
            "round {round}"
        );
        consumed += 1;
        already += instants.len() as u32;
        by_instance[winners[0] % 2] += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "{ROUNDS} rounds x {RACERS} racers on two instances: {consumed} Consumed, {already} \
         AlreadyConsumed, 0 other; winners by instance {by_instance:?}; {} consumptions in \
         {} ms",
        ROUNDS as usize * RACERS,
        elapsed.as_millis()
    );
    assert_eq!((consumed, already), (ROUNDS, ROUNDS * (RACERS as u32 - 1)));
    // Every request is a marker now: no request left, no parameters kept.
    let (markers, with_parameters): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pushed_authorization_request_markers), \
                (SELECT count(*) FROM pushed_authorization_request_markers \
                 WHERE kept_parameters IS NOT NULL) \
                + (SELECT count(*) FROM pushed_authorization_requests)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((markers, with_parameters), (i64::from(ROUNDS), 0));
    for store in stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racers_for_a_wrong_client_never_consume_the_request() {
    let db = TestDb::new().await;
    let stores = two_instances(&db).await;
    let (mut right_wins, mut right_already, mut wrong) = (0u32, 0u32, 0u32);
    for round in 0..ROUNDS {
        stores[1].store(&request(round)).await.unwrap();
        // Racers 0, 3, 4, 7, ... present the right client; the others another client, on
        // both instances.
        let right = |racer: usize| matches!(racer % 4, 0 | 3);
        let outcomes = race(&stores, move |store, racer| async move {
            let client = if right(racer) { "client-a" } else { "client-b" };
            store
                .consume_for_client(&hash(round), client)
                .await
                .unwrap()
        })
        .await;
        let mut winners = 0;
        for (racer, outcome) in outcomes.into_iter().enumerate() {
            match (right(racer), outcome) {
                (true, Consumption::Consumed(_)) => {
                    winners += 1;
                    right_wins += 1;
                }
                (true, Consumption::AlreadyConsumed { .. }) => right_already += 1,
                (false, Consumption::WrongClient) => wrong += 1,
                (is_right, other) => {
                    panic!("round {round}, racer {racer} (right client: {is_right}): {other:?}")
                }
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    println!(
        "{ROUNDS} rounds x {RACERS} racers (half for another client): {right_wins} Consumed \
         and {right_already} AlreadyConsumed for the right client, {wrong} WrongClient, 0 \
         consumed by a wrong client"
    );
    let half = ROUNDS * RACERS as u32 / 2;
    assert_eq!(
        (right_wins, right_already, wrong),
        (ROUNDS, half - ROUNDS, half)
    );
    for store in stores {
        store.close().await;
    }
}

/// The rounds of the reload race (each is 64 consumptions on two instances).
const RELOAD_ROUNDS: u32 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_a_reload_window_only_the_first_consumers_session_gets_the_request_again() {
    let db = TestDb::new().await;
    let window = ConsumePolicy::ReloadWithin(std::time::Duration::from_secs(600));
    let stores = two_instances_with(&db, PostgresStoreOptions::new().consume_policy(window)).await;
    // Racers 0, 4, 8, ... are session 1; 1, 5, ... session 2; 2, 6, ... session 3; 3, 7, ...
    // consume without a session (consume_for_client). Each group is a quarter.
    let group = |racer: usize| racer % 4;
    let sessions = ["session-1", "session-2", "session-3"];
    let mut won_by = [0u32; 4];
    for round in 0..RELOAD_ROUNDS {
        stores[round as usize % 2]
            .store(&request(round))
            .await
            .unwrap();
        let outcomes = race(&stores, move |store, racer| async move {
            match sessions.get(group(racer)) {
                Some(session) => store
                    .consume_in_session(&hash(round), "client-a", session)
                    .await
                    .unwrap(),
                None => store
                    .consume_for_client(&hash(round), "client-a")
                    .await
                    .unwrap(),
            }
        })
        .await;
        let mut consumed_by_group = [0usize; 4];
        let mut instants = Vec::new();
        for (racer, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Consumption::Consumed(got) => {
                    assert_eq!(got, request(round).with_expiry_of(&got), "round {round}");
                    consumed_by_group[group(racer)] += 1;
                }
                Consumption::AlreadyConsumed { consumed_at } => instants.push(consumed_at),
                other => panic!("round {round}, racer {racer}: {other:?}"),
            }
        }
        // One group got it: the first consumer's. A session gets it for each of its racers
        // (the first consumption and the reloads); a consumption without a session, once.
        let winners: Vec<usize> = (0..4).filter(|g| consumed_by_group[*g] > 0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {consumed_by_group:?}");
        let winner = winners[0];
        let expected = if winner < 3 { RACERS / 4 } else { 1 };
        assert_eq!(consumed_by_group[winner], expected, "round {round}");
        assert_eq!(instants.len(), RACERS - expected, "round {round}");
        assert!(
            instants.windows(2).all(|pair| pair[0] == pair[1]),
            "round {round}: one consumption, one instant"
        );
        won_by[winner] += 1;
    }
    println!(
        "{RELOAD_ROUNDS} rounds x {RACERS} racers on two instances under a reload window: first consumption by session 1, 2, 3, none: {won_by:?}; \
         every Consumed came from the first consumer's session, 0 from another"
    );
    assert_eq!(won_by.iter().sum::<u32>(), RELOAD_ROUNDS);
    // A request consumed in a session keeps its parameters and binding (for the window);
    // one consumed without a session is a plain marker.
    let (in_session, kept, plain_markers): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE consumed_by IS NOT NULL), \
                count(*) FILTER (WHERE consumed_by IS NOT NULL AND kept_parameters IS NOT NULL), \
                count(*) FILTER (WHERE consumed_by IS NULL AND kept_parameters IS NULL) \
         FROM pushed_authorization_request_markers",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let by_session = i64::from(won_by[0] + won_by[1] + won_by[2]);
    assert_eq!(
        (in_session, kept, plain_markers),
        (by_session, by_session, i64::from(won_by[3]))
    );
    for store in stores {
        store.close().await;
    }
}

/// The request as stored, with the expiry the database returned (truncated to microseconds).
trait WithExpiryOf {
    fn with_expiry_of(self, other: &PushedAuthorizationRequest) -> Self;
}

impl WithExpiryOf for PushedAuthorizationRequest {
    fn with_expiry_of(mut self, other: &PushedAuthorizationRequest) -> Self {
        self.expires_at = other.expires_at;
        self
    }
}
