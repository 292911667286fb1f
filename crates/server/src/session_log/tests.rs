use super::*;

fn key(client: &str, session: &str) -> SessionKey {
    SessionKey {
        client: client.into(),
        session: session.into(),
    }
}

fn logs() -> SessionLogs {
    SessionLogs::new(Duration::from_secs(600), LogBudget::new(8 << 20, 64 << 20))
}

fn applied(version: u64, bytes: usize) -> Outcome {
    Outcome::Applied {
        version,
        reply: Some("x".repeat(bytes).into()),
    }
}

#[test]
fn a_retry_gets_its_first_outcome_and_an_old_one_is_unknown() {
    let mut logs = logs();
    let alice = key("alice", "s");
    logs.attach(&alice, None);
    assert!(logs.check(&alice, 1).is_ok());
    logs.record(&alice, 1, applied(7, 10));
    logs.record(&alice, 1, Outcome::Failed(Failure::Vetoed));
    match logs.check(&alice, 1) {
        Err(Failure::Repeated(outcome)) => {
            assert!(matches!(*outcome, Outcome::Applied { version: 7, .. }));
        }
        other => panic!("{other:?}"),
    }
    for id in 2..(DEDUP_WINDOW as u64 + 3) {
        logs.record(&alice, id, applied(id, 10));
    }
    assert!(matches!(
        logs.check(&alice, 1),
        Err(Failure::OutcomeUnknown)
    ));
}

#[test]
fn keys_of_different_clients_never_collide() {
    let mut logs = logs();
    let first = key("A\nX", "Y");
    let second = key("A", "X\nY");
    logs.attach(&first, None);
    logs.attach(&second, None);
    logs.record(&first, 1, applied(1, 10));
    assert!(logs.check(&first, 1).is_err());
    assert!(logs.check(&second, 1).is_ok());
}

#[test]
fn a_forgotten_session_answers_what_was_sent_before_as_unknown() {
    let mut logs = logs();
    let alice = key("alice", "s");
    logs.attach(&alice, Some(5));
    assert!(matches!(
        logs.check(&alice, 5),
        Err(Failure::OutcomeUnknown)
    ));
    assert!(matches!(
        logs.check(&alice, 1),
        Err(Failure::OutcomeUnknown)
    ));
    assert!(logs.check(&alice, 6).is_ok());
    // A session the state knows ignores lastSent.
    logs.record(&alice, 6, applied(1, 10));
    logs.detach(&alice);
    logs.attach(&alice, Some(100));
    assert!(matches!(logs.check(&alice, 6), Err(Failure::Repeated(_))));
    assert!(logs.check(&alice, 7).is_ok());
}

#[test]
fn kept_frames_stay_within_the_state_budget_and_the_server_budget() {
    let budget = LogBudget::new(1_000, 1_500);
    let mut one = SessionLogs::new(Duration::from_secs(600), budget.clone());
    let mut two = SessionLogs::new(Duration::from_secs(600), budget.clone());
    let (a, b) = (key("a", "s"), key("b", "s"));
    one.attach(&a, None);
    two.attach(&b, None);
    for id in 1..=200 {
        one.record(&a, id, applied(id, 90));
        assert!(one.kept_bytes() <= 1_000, "{}", one.kept_bytes());
        two.record(&b, id, applied(id, 90));
        assert!(two.kept_bytes() <= 1_000);
        let server = budget.server.load(Ordering::Relaxed);
        assert!(server <= 1_500, "server: {server}");
        assert_eq!(server, one.kept_bytes() + two.kept_bytes());
    }
    // The newest are kept, the oldest answered with their version only.
    match one.check(&a, 200) {
        Err(Failure::Repeated(outcome)) => {
            assert!(matches!(
                *outcome,
                Outcome::Applied {
                    version: 200,
                    reply: Some(_)
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    match one.check(&a, 1) {
        Err(Failure::Repeated(outcome)) => {
            assert!(matches!(
                *outcome,
                Outcome::Applied {
                    version: 1,
                    reply: None
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    // A frame larger than the budget is not kept at all.
    one.record(&a, 201, applied(201, 5_000));
    assert!(one.kept_bytes() <= 1_000);
    drop(one);
    drop(two);
    assert_eq!(
        budget.server.load(Ordering::Relaxed),
        0,
        "released when dropped"
    );
}

#[test]
fn one_client_flooding_sessions_pushes_out_only_its_own() {
    let mut logs = logs();
    let victim = key("victim", "v");
    logs.attach(&victim, None);
    logs.record(&victim, 1, applied(1, 10));
    logs.detach(&victim);
    for i in 0..5_000 {
        let flood = key("mallory", &format!("s{i}"));
        logs.attach(&flood, None);
        logs.detach(&flood);
    }
    assert!(matches!(logs.check(&victim, 1), Err(Failure::Repeated(_))));
    assert_eq!(
        logs.detached_per_client.get("mallory").copied(),
        Some(MAX_SESSIONS_PER_CLIENT)
    );
}

#[test]
fn past_the_state_cap_the_biggest_client_loses_a_session_first() {
    let mut logs = logs();
    let victim = key("victim", "v");
    logs.attach(&victim, None);
    logs.record(&victim, 1, applied(1, 10));
    logs.detach(&victim);
    // Many identifiers, each below its own quota, together past the state's cap.
    for client in 0..100 {
        for session in 0..45 {
            let k = key(&format!("c{client}"), &format!("s{session}"));
            logs.attach(&k, None);
            logs.detach(&k);
        }
    }
    assert!(logs.detached <= MAX_DETACHED_SESSIONS, "{}", logs.detached);
    assert!(matches!(logs.check(&victim, 1), Err(Failure::Repeated(_))));
}

#[test]
fn the_outcomes_of_a_state_stay_within_their_count() {
    let mut logs = logs();
    let live = key("live", "l");
    logs.attach(&live, None);
    logs.record(&live, 1, applied(1, 10));
    let mut id = 1;
    for client in 0..300 {
        let k = key(&format!("c{client}"), "s");
        logs.attach(&k, None);
        for _ in 0..DEDUP_WINDOW {
            id += 1;
            logs.record(&k, id, applied(id, 0));
        }
        logs.detach(&k);
        assert!(logs.outcomes <= MAX_OUTCOMES_PER_STATE, "{}", logs.outcomes);
    }
    assert!(
        logs.check(&live, 1).is_err(),
        "a session with a connection is kept"
    );
    let kept: usize = logs.logs.values().map(|log| log.outcomes.len()).sum();
    assert_eq!(kept, logs.outcomes, "the count matches");
}
