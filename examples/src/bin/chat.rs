//! Terminal chat on the native client: `cargo run -p state-sync-examples --bin chat -- --name alice [--url ws://localhost:5000]`
//!
//! Start the demo server first (`./scripts/demo.sh`), then run this in two terminals
//! with different names. Type a line and press Enter to send it; `/quit` leaves. The
//! chat lives in the state `demo-chat` as `{"chatMessages": [{"sender", "content"}]}`,
//! the shape the browser demo uses too. Stop the server and start it again: the chat
//! reconnects by itself, and lines typed meanwhile are sent once it is back.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use state_sync_client::{Client, ConnectionStatus};
use tokio::io::{AsyncBufReadExt, BufReader};

const STATE: &str = "demo-chat";

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let client = Client::connect(&args.url, &args.name, None).await?;
    let state = client.connect_to_state(STATE).await?;
    let messages = state["chatMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    messages.iter().for_each(print_message);
    println!(
        "-- connected to {} as {}; type a message, /quit to leave --",
        args.url, args.name
    );

    // Print the messages that are new in each update (the list only grows).
    let shown = Arc::new(Mutex::new(messages.len()));
    let counter = Arc::clone(&shown);
    client.add_state_update_listener("printer", &["chatMessages"], move |updates, _previous| {
        let Some(list) = updates["chatMessages"].as_array() else {
            return;
        };
        let mut shown = counter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.iter().skip(*shown).for_each(print_message);
        *shown = list.len();
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

    // Own messages not yet applied: each update carries them all, so a line typed
    // before the previous one came back is not lost.
    let unconfirmed: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let message = json!({"sender": args.name, "content": line, "id": uuid_like()});
        let list = {
            let mut unconfirmed = unconfirmed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            unconfirmed.push(message.clone());
            let mut list = client.state()["chatMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let missing: Vec<Value> = unconfirmed
                .iter()
                .filter(|m| !list.contains(m))
                .cloned()
                .collect();
            list.extend(missing);
            list
        };
        // Not awaited here: the update is queued now and delivered exactly once, even
        // across a server restart; a failure is printed when it comes.
        let sending = client.update_state(json!({"chatMessages": list}));
        let unconfirmed = Arc::clone(&unconfirmed);
        tokio::spawn(async move {
            let result = sending.await;
            unconfirmed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|m| *m != message);
            if let Err(error) = result {
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
