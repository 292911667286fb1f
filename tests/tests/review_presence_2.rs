//! Second adversarial review of presence: attacks on the fixes of the first review
//! (commits 75b731e and 933142a): unannounced join and leave suppression, promotion of
//! hidden entries, takeovers (identity changes, closes, the kept entry of a same-state
//! re-attach), and the client core's count of awaited PRESENCE frames. Real sockets.
//!
//! Each test says in its doc comment whether it reproduced a defect, since **FIXED**
//! (it failed on the code it was written against, and guards the fix now), or is an
//! attack that **HELD UP** (it passed, and guards the property from now on).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use state_sync_client::Client;
use state_sync_protocol::{ClientCore, Event, PresenceEvent};
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{
    PresenceView, RawClient, Received, attach_watching, eventually, follow, present_users, serve,
};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A server whose clients' public identity is `{"name": <token>}`.
fn named_syncer(
    tune: impl FnOnce(state_sync_server::Builder<Value>) -> state_sync_server::Builder<Value>,
    state: impl FnOnce(StateOptions<Value>) -> StateOptions<Value>,
) -> StateSyncer<Value> {
    let builder = StateSyncer::builder().authorize(|request| {
        let name = request.token.clone().unwrap_or_default();
        std::future::ready(Ok(json!({"name": name})))
    });
    let syncer = tune(builder).build();
    syncer
        .create_state(state(
            StateOptions::new()
                .identifier("room")
                .public_identity(|_, client: &Value| json!({"name": client["name"]})),
        ))
        .unwrap();
    syncer
}

/// Closes a raw client properly and reads until the server's close.
async fn close(mut client: RawClient) {
    client.send_message(Message::Close(None)).await;
    while let Received::Json(_) = client.next().await {}
}

// ---------------------------------------------------------------------------------
// Unannounced suppression meets takeovers
// ---------------------------------------------------------------------------------

/// FIXED (was DEFECT). A client whose public identity changed takes its entry back (same session:
/// a reconnect after a rename, or a re-attach after its profile changed) and then
/// closes, all within one `presence_interval` of the last flush: the watchers never
/// hear it leave. The entry stays in their lists for ever (a ghost), while the server
/// (`presence_of_state`) says nobody is there. Here the interval is 1 s to make the
/// window wide; with the default 50 ms it takes a reconnect and a close within 50 ms
/// of any other presence change of the state, which a busy state makes likely.
///
/// Cause (933142a + 75b731e): a takeover with a new public identity notes a `Join`,
/// and `Hub::join` records every `Join` it notes in `unannounced`. The entry was
/// announced long before (its first join was flushed), but `Hub::remove` sees it in
/// `unannounced` with no snapshot since, and drops its pending join **and** its leave.
///
/// Fix: record in `unannounced` only new entries (the `else` branch of `join`: not a
/// takeover), e.g. return from the branch whether the entry is new; or remove the id
/// from `unannounced` on every takeover.
#[tokio::test]
async fn a_renamed_client_that_leaves_within_the_interval_is_seen_leaving() {
    let syncer = named_syncer(|b| b.presence_interval(Duration::from_secs(1)), |s| s);
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    let mut view = PresenceView::of(&attach_watching(&mut watcher, "room", json!({})).await);
    // A quiet interval: ann's join is flushed at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut first = RawClient::connect(&url, "ann", Some("Ann")).await;
    attach_watching(&mut first, "room", json!({"session": "s"})).await;
    follow(&mut watcher, &mut view, Duration::from_millis(200)).await;
    assert_eq!(view.users(), [json!({"name": "Ann"})]);
    // Renamed, she comes back with her session (the old connection is closed), and
    // goes.
    let mut second = RawClient::connect(&url, "ann", Some("Annie")).await;
    attach_watching(&mut second, "room", json!({"session": "s"})).await;
    let _ = first.expect_close().await;
    close(second).await;
    eventually("ann's connections are gone", || {
        syncer.connection_count() == 1
    })
    .await;
    follow(&mut watcher, &mut view, Duration::from_millis(2000)).await;
    assert_eq!(present_users(&syncer, "room"), [json!({"name": "w"})]);
    assert_eq!(
        view.users(),
        Vec::<Value>::new(),
        "the watcher still shows ann, who left (the server says nobody is there)"
    );
}

/// HELD UP. The suppression itself: a client that attaches and closes within the
/// interval (nobody saw it) is not told, and one whose join *was* flushed is told
/// leaving, even within the interval; an entry taken over without a new identity and
/// closed within the interval is told leaving too.
#[tokio::test]
async fn entries_seen_by_watchers_are_always_seen_leaving() {
    let syncer = named_syncer(|b| b.presence_interval(Duration::from_millis(600)), |s| s);
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    let mut view = PresenceView::of(&attach_watching(&mut watcher, "room", json!({})).await);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Flushed at once.
    let mut seen = RawClient::connect(&url, "bob", Some("Bob")).await;
    attach_watching(&mut seen, "room", json!({"session": "b"})).await;
    follow(&mut watcher, &mut view, Duration::from_millis(100)).await;
    assert_eq!(view.users(), [json!({"name": "Bob"})]);
    // Taken over (same identity) and closed, within the interval.
    let mut again = RawClient::connect(&url, "bob", Some("Bob")).await;
    attach_watching(
        &mut again,
        "room",
        json!({"session": "b", "presence": {"n": 1}}),
    )
    .await;
    let _ = seen.expect_close().await;
    // One nobody sees: attached and closed within the interval.
    let mut quick = RawClient::connect(&url, "cy", Some("Cy")).await;
    attach_watching(&mut quick, "room", json!({})).await;
    close(quick).await;
    close(again).await;
    eventually("only the watcher is left", || {
        syncer.connection_count() == 1
    })
    .await;
    follow(&mut watcher, &mut view, Duration::from_millis(1000)).await;
    assert_eq!(view.users(), Vec::<Value>::new(), "{view:?}");
    assert_eq!(present_users(&syncer, "room"), [json!({"name": "w"})]);
}

// ---------------------------------------------------------------------------------
// Identity size on takeovers
// ---------------------------------------------------------------------------------

/// FIXED (was DEFECT). The public identity bound (75b731e: "a public identity over
/// max_presence_bytes is never shown") is checked only for new entries: a client that
/// takes its shown entry back with a new, oversized identity stays shown with it, and
/// every watcher receives it (a `join`), as does every later snapshot. Here the
/// identity is 4,000 bytes against a 64-byte limit; a client repeating this across
/// its sessions (or on every reconnect) brings back the unbounded snapshot the first
/// review fixed.
///
/// Cause: the takeover branch of `Hub::join` sets `local.showable = !hidden` but keeps
/// `entry.shown` (and sends a `Join` with the new `user`).
///
/// Fix: on a takeover whose identity is too large, hide the entry: `shown = false`,
/// move it from `shown` to `hidden`, note a `Leave` for the watchers (and
/// `show_next`); the attach is then answered 13 `tooLarge` as a new one is.
#[tokio::test]
async fn a_takeover_with_an_oversized_identity_is_not_shown() {
    let syncer = named_syncer(|b| b.max_presence_bytes(64), |s| s);
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    let mut view = PresenceView::of(&attach_watching(&mut watcher, "room", json!({})).await);
    let mut first = RawClient::connect(&url, "ann", Some("Ann")).await;
    attach_watching(&mut first, "room", json!({"session": "s"})).await;
    let long = "x".repeat(4000);
    let mut second = RawClient::connect(&url, "ann", Some(&long)).await;
    attach_watching(&mut second, "room", json!({"session": "s"})).await;
    follow(&mut watcher, &mut view, Duration::from_millis(300)).await;
    let mut late = RawClient::connect(&url, "late", Some("late")).await;
    late.send(json!({"type": 2, "data": {"stateIdentifier": "room", "presence": {}}}))
        .await;
    late.expect(7).await;
    let snapshot = late.next_text().await;
    let largest_seen = view
        .users()
        .iter()
        .map(|u| u.to_string().len())
        .max()
        .unwrap_or(0);
    assert!(
        snapshot.len() <= 1024 && largest_seen <= 64,
        "a snapshot of {} bytes, and a watcher shown an identity of {largest_seen} bytes \
         (limit 64)",
        snapshot.len()
    );
}

/// FIXED (was DEFECT) (minor). The other way round: an entry hidden because its identity was too
/// large, taken back with an identity within the limit, stays hidden although the
/// state has all the room it wants (limit 512, one entry shown); its `set_presence`
/// is answered 13 `full` ("the state already shows 512 present clients"), which is
/// false. It is shown only when some shown entry leaves (`show_next`).
///
/// Cause: the takeover branch of `Hub::join` updates `showable` but never re-decides
/// `shown`.
///
/// Fix: on a takeover of a hidden entry that is now showable, show it when there is
/// room (as `show_next` does: `shown = true`, counters, a `Join`).
#[tokio::test]
async fn a_hidden_entry_taken_back_with_a_small_identity_is_shown() {
    let syncer = named_syncer(|b| b.max_presence_bytes(64), |s| s);
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    let mut view = PresenceView::of(&attach_watching(&mut watcher, "room", json!({})).await);
    let long = "x".repeat(4000);
    let mut first = RawClient::connect(&url, "ann", Some(&long)).await;
    attach_watching(&mut first, "room", json!({"session": "s"})).await;
    let mut second = RawClient::connect(&url, "ann", Some("Ann")).await;
    attach_watching(&mut second, "room", json!({"session": "s"})).await;
    second
        .send(json!({"type": 4, "data": {"presence": {"typing": true}}}))
        .await;
    let refused = tokio::time::timeout(Duration::from_millis(300), second.recv())
        .await
        .ok();
    follow(&mut watcher, &mut view, Duration::from_millis(300)).await;
    assert_eq!(
        view.users(),
        [json!({"name": "Ann"})],
        "ann, with an identity within the limit, in a state with room, is not shown; her \
         set_presence was answered {refused:?}"
    );
}

// ---------------------------------------------------------------------------------
// Counters: promotion, suppression, lingering
// ---------------------------------------------------------------------------------

/// HELD UP. Churn around the entry limit, mixing entries hidden for want of room,
/// promotions (`show_next`), joins and leaves within one interval (suppressed) and
/// after it, takeovers and lingering entries: no counter drifts (a `usize` underflow
/// would panic in this debug build and kill a connection's task). Afterwards the
/// server, a long-lived watcher and a newcomer agree on who is shown, and the limit
/// still counts right: with the room free again, exactly `max` are shown.
#[tokio::test]
async fn churn_around_the_entry_limit_keeps_the_counts_right() {
    let syncer = named_syncer(
        |b| {
            b.max_presence_entries(3)
                .presence_interval(Duration::from_millis(150))
                .presence_grace(Duration::from_millis(300))
        },
        |s| s,
    );
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    let mut view = PresenceView::of(&attach_watching(&mut watcher, "room", json!({})).await);
    let mut live: Vec<RawClient> = Vec::new();
    for round in 0..24usize {
        let name = format!("c{round}");
        let mut client = RawClient::connect(&url, &name, Some(&name)).await;
        let session = format!("s{}", round % 5);
        attach_watching(&mut client, "room", json!({"session": session})).await;
        live.push(client);
        match round % 4 {
            // Close the oldest (a shown one: a promotion), at once.
            0 if live.len() > 1 => close(live.remove(0)).await,
            // Close the newest, within the interval (suppressed when nobody saw it).
            1 => close(live.pop().unwrap()).await,
            // Lose the second oldest without a close (it lingers, then leaves).
            2 if live.len() > 2 => drop(live.remove(1)),
            _ => tokio::time::sleep(Duration::from_millis(160)).await,
        }
        follow(&mut watcher, &mut view, Duration::from_millis(20)).await;
    }
    for client in live.drain(..) {
        close(client).await;
    }
    eventually("everyone but the watcher is gone", || {
        syncer.connection_count() == 1
    })
    .await;
    // The grace period of the lost ones ends.
    follow(&mut watcher, &mut view, Duration::from_millis(800)).await;
    assert_eq!(present_users(&syncer, "room"), [json!({"name": "w"})]);
    assert_eq!(view.users(), Vec::<Value>::new(), "{view:?}");
    // Room for two more besides the watcher, then none.
    let mut fresh = Vec::new();
    for name in ["x", "y", "z"] {
        let mut client = RawClient::connect(&url, name, Some(name)).await;
        attach_watching(&mut client, "room", json!({})).await;
        fresh.push(client);
    }
    follow(&mut watcher, &mut view, Duration::from_millis(400)).await;
    assert_eq!(
        present_users(&syncer, "room"),
        [
            json!({"name": "w"}),
            json!({"name": "x"}),
            json!({"name": "y"})
        ]
    );
    assert_eq!(view.users().len(), 2, "{view:?}");
    let mut late = RawClient::connect(&url, "late", Some("late")).await;
    let snapshot = attach_watching(&mut late, "room", json!({})).await;
    assert_eq!(PresenceView::of(&snapshot).others.len(), 3, "{snapshot}");
}

// ---------------------------------------------------------------------------------
// Takeover and the kept membership
// ---------------------------------------------------------------------------------

/// HELD UP. Another identifier that presents someone's session id cannot take their
/// live entry, nor close their connection: both are shown, and the victim's
/// connection still works.
#[tokio::test]
async fn another_identifier_cannot_close_a_live_connection_with_its_session() {
    let syncer = named_syncer(|b| b, |s| s);
    let (_server, url) = serve(&syncer).await;
    let mut ann = RawClient::connect(&url, "ann", Some("Ann")).await;
    let own = attach_watching(&mut ann, "room", json!({"session": "s"})).await;
    let mut mallory = RawClient::connect(&url, "mallory", Some("Mallory")).await;
    let theirs = attach_watching(&mut mallory, "room", json!({"session": "s"})).await;
    assert_ne!(own["self"], theirs["self"]);
    let mut view = PresenceView::of(&own);
    follow(&mut ann, &mut view, Duration::from_millis(300)).await;
    assert_eq!(view.users(), [json!({"name": "Mallory"})]);
    assert_eq!(syncer.connection_count(), 2);
    ann.send(json!({"type": 4, "data": {"presence": {"n": 1}}}))
        .await;
    ann.expect_silence(Duration::from_millis(200)).await;
}

/// HELD UP. Re-attaching to the same state (the kept membership of 933142a) when the
/// attach is refused (here the allow hook refuses the second attach) leaves no ghost:
/// the watcher sees the entry leave, and the server shows nobody. Re-attaching
/// without a session (a new entry) shows one entry, not two.
#[tokio::test]
async fn a_refused_reattach_to_the_same_state_leaves_no_ghost() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let syncer = named_syncer(
        |b| b,
        move |s| {
            s.allow_connecting_client(move |client: &Value| {
                client["name"] != "Ann" || counted.fetch_add(1, Ordering::SeqCst) != 1
            })
        },
    );
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    let mut view = PresenceView::of(&attach_watching(&mut watcher, "room", json!({})).await);
    let mut ann = RawClient::connect(&url, "ann", Some("Ann")).await;
    attach_watching(&mut ann, "room", json!({"session": "s"})).await;
    follow(&mut watcher, &mut view, Duration::from_millis(200)).await;
    assert_eq!(view.users(), [json!({"name": "Ann"})]);
    ann.send(
        json!({"type": 2, "data": {"stateIdentifier": "room", "session": "s", "presence": {}}}),
    )
    .await;
    let refused = ann.recv().await;
    assert_eq!(refused["type"], 8, "{refused}");
    follow(&mut watcher, &mut view, Duration::from_millis(300)).await;
    assert_eq!(view.users(), Vec::<Value>::new(), "a ghost: {view:?}");
    assert_eq!(present_users(&syncer, "room"), [json!({"name": "w"})]);
    // Allowed again: attach with the session, then re-attach without one.
    attach_watching(&mut ann, "room", json!({"session": "s"})).await;
    attach_watching(&mut ann, "room", json!({})).await;
    follow(&mut watcher, &mut view, Duration::from_millis(300)).await;
    assert_eq!(view.users(), [json!({"name": "Ann"})], "{view:?}");
    assert_eq!(
        present_users(&syncer, "room"),
        [json!({"name": "w"}), json!({"name": "Ann"})]
    );
}

// ---------------------------------------------------------------------------------
// The client core's awaited PRESENCE frames
// ---------------------------------------------------------------------------------

/// HELD UP. The native client's count of awaited PRESENCE frames does not get stuck:
/// after an attach refused (no such state, then a state whose allow hook refuses), a
/// later attach shows the others.
#[tokio::test]
async fn refused_attaches_do_not_stop_later_presence() {
    let syncer = named_syncer(
        |b| b,
        |s| s.allow_connecting_client(|client: &Value| client["name"] != "blocked"),
    );
    syncer
        .create_state(
            StateOptions::new()
                .identifier("closed")
                .allow_connecting_client(|_: &Value| false),
        )
        .unwrap();
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", Some("w")).await;
    attach_watching(&mut watcher, "room", json!({})).await;
    let client = Client::connect(&url, "ann", Some("Ann")).await.unwrap();
    assert!(client.connect_to_state("nope").await.is_err());
    assert!(client.connect_to_state("closed").await.is_err());
    client.connect_to_state("room").await.unwrap();
    eventually("ann sees the watcher", || client.others().len() == 1).await;
    assert_eq!(client.others()[0].user, json!({"name": "w"}));
}

/// HELD UP. The core alone: attaches sent, the transport lost before their PRESENCE,
/// and the re-attach on the new transport: its PRESENCE counts; an 8 refusing a
/// superseded attach does not make a superseded PRESENCE count.
#[test]
fn the_client_core_counts_presence_across_transports_and_refusals() {
    let presence = |state: &str, own: &str, user: &str| {
        json!({"type": 11, "data": {"stateIdentifier": state, "self": own,
            "others": [{"id": "o", "user": user, "presence": {}}]}})
        .to_string()
    };
    let synced = |events: &[Event]| {
        events.iter().any(
            |e| matches!(e, Event::Presence(PresenceEvent::Synced(others)) if !others.is_empty()),
        )
    };
    let mut core = ClientCore::new("s");
    core.connect_to_state("a");
    core.transport_up();
    core.connect_to_state("a");
    core.transport_down();
    core.transport_up();
    let events = core.on_text(&presence("a", "me", "x"));
    assert!(
        synced(&events),
        "the PRESENCE of the only attach on this transport"
    );
    // Two attaches in flight, the first refused (an 8, no PRESENCE): the second's
    // PRESENCE counts.
    core.connect_to_state("b");
    core.connect_to_state("c");
    let refused = json!({"type": 8, "data": {"message": "no"}}).to_string();
    core.on_text(&refused);
    let events = core.on_text(&presence("c", "me", "y"));
    assert!(synced(&events), "c's PRESENCE, the last attach's");
}
