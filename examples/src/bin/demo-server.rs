//! Demo server: `cargo run -p state-sync-examples --bin demo-server -- [--port 5000] [--static DIR] [--data DIR | --memory]`
//!
//! Serves `ws://0.0.0.0:PORT` with one state, `demo-chat` (`{"chatMessages": []}`),
//! and, with `--static`, the files of DIR (the built React chat) on the same port.
//! The chat is saved in `--data DIR` (default `target/demo-data`) and survives a
//! restart or a crash; `--memory` keeps it in memory only.
//! It logs every client that connects and every update, and its interceptor vetoes
//! updates whose `chatMessages` is not an array of `{sender, content}` (with `sentAt`,
//! if any, a time in milliseconds) or has a message containing the word "spam" (a moderation rule to show vetoes). Any client of
//! server-state-sync (the original JavaScript one included) can connect with
//! `?identifier=<name>`; the token is ignored. Ctrl-C closes connections cleanly.

use serde_json::{Value, json};
use state_sync_server::protocol::{Operation, Update};
use state_sync_server::{StateOptions, StateSyncer};

struct Args {
    port: u16,
    static_files: Option<std::path::PathBuf>,
    /// `None`: in memory.
    data: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 5000;
    let mut static_files = None;
    let mut data = Some(std::path::PathBuf::from("target/demo-data"));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port: {value:?} is not a port number"))?;
            }
            "--static" => {
                let dir = std::path::PathBuf::from(args.next().ok_or("--static needs a folder")?);
                if !dir.join("index.html").is_file() {
                    return Err(format!("--static: {} has no index.html", dir.display()));
                }
                static_files = Some(dir);
            }
            "--data" => data = Some(args.next().ok_or("--data needs a folder")?.into()),
            "--memory" => data = None,
            "-h" | "--help" => {
                println!(
                    "usage: demo-server [--port PORT] [--static DIR] [--data DIR | --memory]\n\n\
                     --port PORT   where to listen (default 5000)\n\
                     --static DIR  serve the built web app in DIR on the same port\n\
                     --data DIR    save the chat in DIR (default target/demo-data)\n\
                     --memory      keep the chat in memory only"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(Args {
        port,
        static_files,
        data,
    })
}

/// Why an update of the chat is refused, if it is.
fn refusal(update: &Update) -> Option<&'static str> {
    let messages: &[Value] = match (update.set.get("chatMessages"), chat_operation(update)) {
        (Some(Value::Array(messages)), _) => messages,
        (Some(_), _) => return Some("chatMessages must be an array"),
        (None, Some(Operation::Append { items, .. })) => items,
        (None, Some(_)) => return Some("messages can only be appended"),
        (None, None) => return None,
    };
    for message in messages {
        let (Some(_), Some(content)) = (message["sender"].as_str(), message["content"].as_str())
        else {
            return Some("each message needs a sender and a content");
        };
        if !message.get("sentAt").is_none_or(is_javascript_time) {
            return Some("sentAt must be a time in milliseconds");
        }
        if content.to_lowercase().contains("spam") {
            return Some("no spam");
        }
    }
    None
}

/// Whether `value` is a number a JavaScript `Date` holds (±8.64e15 ms around 1970):
/// pages render `sentAt` as a date, and `new Date(1e300).toISOString()` throws.
fn is_javascript_time(value: &Value) -> bool {
    value.as_f64().is_some_and(|ms| ms.abs() <= 8.64e15)
}

/// The operation an update does on the chat history, if any.
fn chat_operation(update: &Update) -> Option<&Operation> {
    update
        .ops
        .iter()
        .find(|(key, _)| key == "chatMessages")
        .map(|(_, operation)| operation)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colours only on a terminal: a log redirected to a file stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = parse_args()?;

    // The client information of a connection is its identifier.
    let mut builder = StateSyncer::builder();
    if let Some(dir) = &args.static_files {
        builder = builder.static_files(dir);
    }
    if let Some(dir) = &args.data {
        builder = builder.storage(state_sync_server::Storage::open(dir)?);
    }
    let syncer = builder
        .authorize(|request| async move {
            tracing::info!(client = %request.identifier, from = %request.remote_addr, "client connecting");
            Ok(request.identifier)
        })
        .build();
    syncer.create_state(
        StateOptions::new()
            .identifier("demo-chat")
            .initial_value(json!({"chatMessages": []}))
            .allow_connecting_client(|client: &String| {
                tracing::info!(%client, "client attached to demo-chat");
                true
            })
            .intercept_state_update(|updates, client| {
                let client = client.map_or("server", String::as_str);
                if let Some(why) = refusal(&updates) {
                    tracing::warn!(%client, "vetoed: {why}");
                    return None;
                }
                tracing::info!(%client, set = %serde_json::Value::Object(updates.set.clone()), operations = updates.ops.len(), "update");
                Some(updates)
            }),
    )?;
    let server = syncer.start(args.port).await?;
    let port = server.local_addr().port();
    println!("demo server listening on ws://localhost:{port} (state: demo-chat); Ctrl-C stops it");
    if args.static_files.is_some() {
        println!("open http://localhost:{port} in two browser tabs and chat");
    }
    if let Some(dir) = &args.data {
        println!("the chat is saved in {}", dir.display());
    }
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    syncer.sync().await?;
    syncer.close_storage();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(message: Value) -> Update {
        Update::new().append_capped("chatMessages", [message], 100)
    }

    #[test]
    fn refuses_a_sent_at_that_is_not_a_javascript_time() {
        let ok = [
            json!(1_767_000_000_000_u64),
            json!(0),
            json!(-8.64e15),
            json!(8.64e15),
        ];
        for at in ok {
            let message = json!({"sender": "a", "content": "hi", "sentAt": at});
            assert_eq!(refusal(&append(message)), None, "{at}");
        }
        assert_eq!(
            refusal(&append(json!({"sender": "a", "content": "hi"}))),
            None
        );
        for at in [
            json!(1e300),
            json!(8.64e15 + 1.0),
            json!("today"),
            json!(null),
            json!({}),
        ] {
            let message = json!({"sender": "a", "content": "hi", "sentAt": at});
            assert!(refusal(&append(message)).is_some(), "{at}");
        }
        assert_eq!(
            refusal(&append(json!({"sender": "a", "content": "spam"}))),
            Some("no spam")
        );
    }
}
