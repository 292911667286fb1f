//! Terminal chat on the native client: `cargo run -p state-sync-examples --bin chat -- --name alice [--url ws://localhost:5000]`
//!
//! Start the demo server first (`./scripts/demo.sh`), then run this in two terminals
//! with different names. Type a line and press Enter to send it; `/quit` leaves. The
//! chat lives in the state `demo-chat` as `{"chatMessages": [{"sender", "content", "sentAt"}]}`,
//! the shape the browser demo uses too; each line is an atomic append (the newest 100
//! messages are kept), so lines sent at the same moment from several terminals or
//! browsers all land. Stop the server and start it again: the chat reconnects by
//! itself, and lines typed meanwhile are sent once it is back.

use serde_json::{Value, json};
use state_sync_client::{Client, ConnectionStatus, Update};
use tokio::io::{AsyncBufReadExt, BufReader};

const STATE: &str = "demo-chat";

/// How many messages the chat keeps (the oldest go).
const HISTORY: u64 = 100;

struct Args {
    url: String,
    name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut url = "ws://localhost:5000".to_owned();
    let mut name = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.next().ok_or("--url needs a value")?,
            "--name" => name = Some(args.next().ok_or("--name needs a value")?),
            "-h" | "--help" => {
                println!("usage: chat --name NAME [--url ws://localhost:5000]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(Args {
        url,
        name: name.ok_or("--name is required; try --help")?,
    })
}

fn print_message(message: &Value) {
    let sender = message["sender"].as_str().unwrap_or("?");
    let content = message["content"].as_str().unwrap_or("");
    println!("{sender}: {content}");
}

/// The messages of `current` that are not in `previous`: the list only grows at its
/// end and loses its oldest items at the cap, so what is new follows the longest end
/// of `previous` that `current` starts with (all of `current` when none does, after a
/// restart of the server with another history, say).
fn new_messages<'a>(previous: &[Value], current: &'a [Value]) -> &'a [Value] {
    (0..=previous.len())
        .map(|dropped| &previous[dropped..])
        .find(|kept| current.starts_with(kept))
        .map_or(current, |kept| &current[kept.len()..])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let client = Client::connect(&args.url, &args.name, None).await?;
    let state = client.connect_to_state(STATE).await?;
    if let Some(messages) = state["chatMessages"].as_array() {
        messages.iter().for_each(print_message);
    }
    println!(
        "-- connected to {} as {}; type a message, /quit to leave --",
        args.url, args.name
    );

    // Print the messages that are new in each update.
    client.add_state_update_listener("printer", &["chatMessages"], |updates, previous| {
        let Some(current) = updates["chatMessages"].as_array() else {
            return;
        };
        let previous = previous
            .get("chatMessages")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        new_messages(previous, current)
            .iter()
            .for_each(print_message);
    });

    let mut status = client.status_changes();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = *status.borrow_and_update();
            match now {
                ConnectionStatus::Reconnecting => println!("-- connection lost; reconnecting --"),
                ConnectionStatus::Connected => println!("-- reconnected --"),
                ConnectionStatus::Closed => println!("-- closed --"),
                _ => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        // When it was sent, in milliseconds since 1970, as the React chat shows it.
        let sent_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(0));
        let message = json!({
            "sender": args.name, "content": line, "id": uuid_like(), "sentAt": sent_at
        });
        // Not awaited here: the append is queued now and delivered exactly once, even
        // across a server restart; a failure is printed when it comes.
        let sending = client.apply(Update::new().append_capped("chatMessages", [message], HISTORY));
        tokio::spawn(async move {
            if let Err(error) = sending.await {
                println!("-- not sent: {error} --");
            }
        });
    }
    client.close().await;
    Ok(())
}

/// A message identifier, so that two equal lines stay two messages.
fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(ids: &[u32]) -> Vec<Value> {
        ids.iter().map(|id| json!({ "id": id })).collect()
    }

    #[test]
    fn new_messages_are_those_after_what_was_shown() {
        let new = |previous: &[u32], current: &[u32]| {
            new_messages(&messages(previous), &messages(current)).to_vec()
        };
        assert_eq!(new(&[], &[1, 2]), messages(&[1, 2]));
        assert_eq!(new(&[1, 2], &[1, 2, 3]), messages(&[3]));
        // At the cap, the oldest went.
        assert_eq!(new(&[1, 2, 3], &[2, 3, 4]), messages(&[4]));
        assert_eq!(new(&[1, 2, 3], &[3, 4, 5]), messages(&[4, 5]));
        // Nothing in common (another history): all of it.
        assert_eq!(new(&[1, 2], &[7, 8]), messages(&[7, 8]));
        assert_eq!(new(&[1, 2], &[1, 2]), messages(&[]));
    }
}
