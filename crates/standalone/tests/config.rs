//! The standalone server from a configuration file (`--config`): states, static
//! tokens and JWTs (HS256 and RS256), flags that override the file, webhooks and
//! their failure policy, bad files, TLS from files. Real processes and sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use state_sync_client::{Client, Error, FailureReason, Update, UpdateFailure};
use state_sync_tests::RawClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use common::{BIN, start, temp_dir};

const SECRET: &str = "test-secret-of-at-least-32-bytes!!";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: Value) -> String {
    let pem = std::fs::read(Path::new(FIXTURES).join("jwt-test-private.pem")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// Writes `text` as `state-sync.toml` in a fresh directory; returns its path.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = temp_dir(name).join("state-sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The server from `config` on a free port (the flag overrides whatever the file says).
fn serve(config: &Path, more: &[&str]) -> (common::Running, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--config".as_ref(),
        config.as_os_str(),
        "--addr".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    args.extend(more.iter().map(std::ffi::OsStr::new));
    start(&args)
}

/// Connecting with this token is refused with 401 and a body containing `reason`.
async fn refused(url: &str, identifier: &str, token: Option<&str>, reason: &str) {
    match Client::connect(url, identifier, token).await {
        Err(Error::Refused { status, body }) => {
            assert_eq!(status, 401, "{body}");
            assert!(body.contains(reason), "{body:?} should say {reason:?}");
        }
        other => panic!(
            "expected a 401 ({reason}), got {:?}",
            other.map(|_| "a client")
        ),
    }
}

/// Attaching to `state` is refused with STATE_CONNECTION_ERROR.
async fn not_allowed(url: &str, identifier: &str, token: &str, state: &str) {
    let mut raw = RawClient::connect(url, identifier, Some(token)).await;
    raw.send(json!({"type": 2, "data": {"stateIdentifier": state}}))
        .await;
    assert_eq!(
        raw.expect(8).await,
        json!({"message": "Not allowed to connect to this state"}),
        "{identifier} attaching to {state}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn states_static_tokens_and_jwts_from_the_file() {
    let config = config_file(
        "auth",
        &format!(
            r#"
[auth.jwt]
algorithm = "HS256"
secret = "{SECRET}"
states-claim = "rooms"
identifier-claim = "sub"

[[auth.token]]
token = "bot-token"
states = ["lobby"]
claims = {{ name = "bot" }}

[[auth.token]]
token = "admin-token"

[[state]]
id = "lobby"
initial = {{ topic = "Welcome", messages = [] }}

[[state]]
id = "room-1"
initial = '{{"pinned": null}}'

[[state]]
id = "room-2"
"#
        ),
    );
    let (_server, addr) = serve(&config, &[]);
    let url = format!("ws://{addr}");

    // States from the file, with their initial values in the file's key order.
    let alice = hs256(
        json!({"sub": "alice", "rooms": ["room-1"], "exp": now() + 600}),
        SECRET,
    );
    let mut raw = RawClient::connect(&url, "alice", Some(&alice)).await;
    assert_eq!(
        raw.attach("room-1").await,
        json!({"state": {"pinned": null}, "version": 0})
    );
    let client = Client::connect(&url, "alice", Some(&alice)).await.unwrap();
    let lobby = client.connect_to_state("lobby").await;
    assert!(
        matches!(&lobby, Err(Error::AttachFailed(m)) if m.contains("Not allowed")),
        "{lobby:?}"
    );
    client.close().await;
    // A JWT allows the states of its claim, and no other.
    not_allowed(&url, "alice", &alice, "room-2").await;
    not_allowed(&url, "alice", &alice, "lobby").await;
    // "*" allows all; a token without the claim allows none.
    let everywhere = hs256(
        json!({"sub": "eve", "rooms": "*", "exp": now() + 600}),
        SECRET,
    );
    let mut raw = RawClient::connect(&url, "eve", Some(&everywhere)).await;
    let lobby = raw.attach("lobby").await;
    assert_eq!(
        lobby["state"].to_string(),
        r#"{"topic":"Welcome","messages":[]}"#
    );
    let nowhere = hs256(json!({"sub": "nat", "exp": now() + 600}), SECRET);
    not_allowed(&url, "nat", &nowhere, "room-1").await;

    // Refused at the upgrade: expired, not valid yet, wrong signature, no exp,
    // another's identifier, no token, an unknown token, another algorithm.
    let expired = hs256(
        json!({"sub": "alice", "rooms": "*", "exp": now() - 3600}),
        SECRET,
    );
    refused(&url, "alice", Some(&expired), "token expired").await;
    let early = hs256(
        json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600}),
        SECRET,
    );
    refused(&url, "alice", Some(&early), "not valid yet").await;
    let forged = hs256(
        json!({"sub": "alice", "rooms": "*", "exp": now() + 600}),
        "another-secret-of-at-least-32-bytes",
    );
    refused(&url, "alice", Some(&forged), "invalid token signature").await;
    let eternal = hs256(json!({"sub": "alice", "rooms": "*"}), SECRET);
    refused(&url, "alice", Some(&eternal), "without the exp claim").await;
    refused(
        &url,
        "mallory",
        Some(&alice),
        "the identifier is not the token's sub",
    )
    .await;
    refused(&url, "alice", None, "missing token").await;
    refused(&url, "alice", Some("guess"), "invalid token").await;
    let rsa = rs256(json!({"sub": "alice", "rooms": "*", "exp": now() + 600}));
    refused(&url, "alice", Some(&rsa), "algorithm not accepted").await;

    // Static tokens: their own states and claims.
    not_allowed(&url, "bot", "bot-token", "room-1").await;
    let bot = Client::connect(&url, "bot", Some("bot-token"))
        .await
        .unwrap();
    bot.connect_to_state("lobby").await.unwrap();
    bot.update_state(json!({"topic": "Bots welcome"}))
        .await
        .unwrap();
    bot.close().await;
    let admin = Client::connect(&url, "anyone", Some("admin-token"))
        .await
        .unwrap();
    assert!(admin.connect_to_state("room-2").await.unwrap().is_empty());
    assert_eq!(
        admin.connect_to_state("lobby").await.unwrap()["topic"],
        "Bots welcome"
    );
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rs256_with_a_public_key_file_and_an_audience() {
    let dir = temp_dir("rs256");
    std::fs::copy(
        Path::new(FIXTURES).join("jwt-test-public.pem"),
        dir.join("public.pem"),
    )
    .unwrap();
    let config = dir.join("state-sync.toml");
    std::fs::write(
        &config,
        // The key's path is relative to the file's folder.
        "[auth.jwt]\nalgorithm = \"RS256\"\npublic-key = \"public.pem\"\naudience = \"sync\"\nleeway = 5\n\n[[state]]\nid = \"s\"\n",
    )
    .unwrap();
    let (_server, addr) = serve(&config, &[]);
    let url = format!("ws://{addr}");
    let token = rs256(json!({"sub": "ann", "aud": "sync", "exp": now() + 600}));
    let client = Client::connect(&url, "ann", Some(&token)).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    client.close().await;
    let other_audience = rs256(json!({"sub": "ann", "aud": "other", "exp": now() + 600}));
    refused(&url, "ann", Some(&other_audience), "audience not accepted").await;
    // Within the leeway an expired token still passes; past it, not.
    let just = rs256(json!({"aud": "sync", "exp": now() - 1}));
    Client::connect(&url, "ann", Some(&just))
        .await
        .unwrap()
        .close()
        .await;
    let late = rs256(json!({"aud": "sync", "exp": now() - 60}));
    refused(&url, "ann", Some(&late), "token expired").await;
    // An HS256 token made with the public key as its secret (the classic confusion) is
    // not accepted.
    let pem = std::fs::read_to_string(dir.join("public.pem")).unwrap();
    let confused = hs256(json!({"aud": "sync", "exp": now() + 600}), &pem);
    refused(&url, "ann", Some(&confused), "algorithm not accepted").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_override_the_file() {
    let dir = temp_dir("override");
    let config = dir.join("state-sync.toml");
    std::fs::write(
        &config,
        // An address that cannot be listened on, and a data folder: both overridden.
        "addr = \"nowhere.invalid:5000\"\ndata = \"file-data\"\n\n[[state]]\nid = \"a\"\ninitial = { n = 1 }\n",
    )
    .unwrap();
    let flag_data = dir.join("flag-data");
    let (server, addr) = serve(
        &config,
        &[
            "--data",
            flag_data.to_str().unwrap(),
            "--state",
            "a",
            "--state",
            "b",
        ],
    );
    let url = format!("ws://{addr}");
    let client = Client::connect(&url, "c", None).await.unwrap();
    // The file's options win for a state it declares; --state adds the others.
    assert_eq!(client.connect_to_state("a").await.unwrap()["n"], 1);
    assert!(client.connect_to_state("b").await.unwrap().is_empty());
    client.update_state(json!({"saved": true})).await.unwrap();
    client.close().await;
    drop(server);
    assert!(flag_data.join("state-sync.redb").exists());
    assert!(!dir.join("file-data").exists());
    // Without the flag the file's address is used, and fails clearly.
    let output = Command::new(BIN)
        .args(["--config".as_ref(), config.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot listen on nowhere.invalid:5000")
    );
}

/// Runs the server with this configuration; it must refuse it before listening, with
/// status 2. Returns what it printed.
fn rejected(name: &str, text: &str) -> (std::path::PathBuf, String) {
    let config = config_file(name, text);
    let output = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "it must not listen: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (config, stderr)
}

#[test]
fn a_bad_file_names_the_file_the_line_and_the_key() {
    let cases = [
        (
            "unknown-key",
            "[limits]\nmax-connections = 10\nmax-conections = 5\n",
            "line 3, key limits.max-conections: unknown field `max-conections`",
        ),
        (
            "wrong-type",
            "addr = \"127.0.0.1:0\"\n\n[[state]]\nid = \"a\"\nremove-when-empty = \"yes\"\n",
            "line 5, key state[0].remove-when-empty: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "bad-duration",
            "[[state]]\nid = \"a\"\nttl = \"soon\"\n",
            "line 3, key state[0].ttl: \"soon\" is not a duration",
        ),
        ("bad-toml", "addr = \"x\"\n[limits\n", "line 2: "),
        (
            "webhook-timeout",
            "[limits]\nhook-timeout = \"1s\"\n\n[[state]]\nid = \"a\"\n[state.webhook]\nurl = \"http://127.0.0.1:9/\"\ntimeout = \"1s\"\n",
            "line 8, key state[0].webhook.timeout: must be longer than 0 and shorter than limits.hook-timeout",
        ),
        (
            "missing-key-file",
            "[auth.jwt]\nalgorithm = \"RS256\"\npublic-key = \"missing.pem\"\n",
            "line 3, key auth.jwt.public-key: cannot read",
        ),
        (
            "unknown-algorithm",
            "[auth.jwt]\nalgorithm = \"none\"\n",
            "line 2, key auth.jwt.algorithm: unknown variant `none`",
        ),
    ];
    for (name, text, expected) in cases {
        let (config, stderr) = rejected(name, text);
        let file = config.display().to_string();
        assert!(
            stderr.contains(&format!("invalid configuration file {file}, {expected}")),
            "{name}: {stderr}"
        );
    }
    // A file that does not exist.
    let output = Command::new(BIN)
        .args(["--config", "/nonexistent/state-sync.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("/nonexistent/state-sync.toml: cannot read it")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_from_the_files_the_config_names() {
    let dir = temp_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let config = dir.join("state-sync.toml");
    std::fs::write(
        &config,
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n[[state]]\nid = \"secure\"\ninitial = { n = 0 }\n",
    )
    .unwrap();
    let (_server, addr) = serve(&config, &[]);
    let port = addr.rsplit(':').next().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = Client::builder(format!("wss://localhost:{port}"), "c")
        .tls_config(Arc::new(tls))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.connect_to_state("secure").await.unwrap()["n"], 0);
    client.update_state(json!({"n": 1})).await.unwrap();
    client.close().await;
    // Plain text is not served.
    assert!(
        Client::connect(&format!("ws://{addr}"), "c", None)
            .await
            .is_err()
    );

    // A key that does not fit is an error naming tls.key.
    let (_, stderr) = rejected(
        "tls-bad-key",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("cert.pem").display(),
            dir.join("cert.pem").display()
        ),
    );
    assert!(stderr.contains("line 3, key tls.key"), "{stderr}");
}

/// A webhook server on 127.0.0.1:0 that answers by path (see [`answer`]) and keeps
/// every request it received.
struct Webhooks {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhooks {
    async fn start() -> Webhooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_webhook(stream, Arc::clone(&log)));
            }
        });
        Webhooks { addr, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn received(&self, path: &str) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

/// HTTP/1.1 with keep-alive, as ureq speaks it: one request after another.
async fn serve_webhook(stream: tokio::net::TcpStream, log: Arc<Mutex<Vec<(String, Value)>>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap();
        let request: Value = serde_json::from_slice(&body).unwrap();
        log.lock().unwrap().push((path.clone(), request.clone()));
        let (status, answer, delay) = answer(&path, &request);
        tokio::time::sleep(delay).await;
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// What each webhook path answers.
fn answer(path: &str, request: &Value) -> (&'static str, String, Duration) {
    let update = &request["update"];
    let ok = "200 OK";
    match path {
        // Stamps every update with its author's name (from the token's claims).
        "rewrite" => {
            let mut set = update["set"].clone();
            set["author"] = request["clientInformation"]["name"].clone();
            let rewritten = json!({"update": {"set": set, "ops": update["ops"]}});
            (ok, rewritten.to_string(), Duration::ZERO)
        }
        // Vetoes updates that set `forbidden`; lets the others through (204).
        "veto" if update["set"].get("forbidden").is_some() => (
            ok,
            json!({"veto": true, "reason": "forbidden"}).to_string(),
            Duration::ZERO,
        ),
        "veto" => ("204 No Content", String::new(), Duration::ZERO),
        // Too slow for its 300 ms.
        "slow" => (ok, "{}".into(), Duration::from_millis(1500)),
        // A 4xx is a failure, not a veto.
        "forbidden" => ("403 Forbidden", "no".into(), Duration::ZERO),
        // A misspelt answer is a failure, not an approval.
        "misspelt" => (ok, r#"{"vetoo": true}"#.into(), Duration::ZERO),
        _ => ("404 Not Found", String::new(), Duration::ZERO),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_rewrite_veto_and_fail_by_their_policy() {
    let hooks = Webhooks::start().await;
    // A port nobody listens on.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/down", listener.local_addr().unwrap())
    };
    let state = |id: &str, url: &str, extra: &str| {
        format!("[[state]]\nid = \"{id}\"\n[state.webhook]\nurl = \"{url}\"\n{extra}\n")
    };
    let fast = "timeout = \"300ms\"";
    let text = [
        "[limits]\nhook-timeout = \"3s\"\n\n[[auth.token]]\ntoken = \"t\"\nclaims = { name = \"Alice\" }\n"
            .to_owned(),
        state("rewritten", &hooks.url("rewrite"), ""),
        state("vetoed", &hooks.url("veto"), ""),
        state("slow-reject", &hooks.url("slow"), fast),
        state(
            "slow-allow",
            &hooks.url("slow"),
            &format!("{fast}\non-failure = \"allow\""),
        ),
        state("down-reject", &down, "on-failure = \"reject\""),
        state("down-allow", &down, "on-failure = \"allow\""),
        state("forbidden-allow", &hooks.url("forbidden"), "on-failure = \"allow\""),
        state("misspelt-reject", &hooks.url("misspelt"), ""),
    ]
    .concat();
    let config = config_file("webhooks", &text);
    let (_server, addr) = serve(&config, &[]);
    let url = format!("ws://{addr}");
    let client = |state: &'static str| {
        let url = url.clone();
        async move {
            let client = Client::connect(&url, "alice", Some("t")).await.unwrap();
            client.connect_to_state(state).await.unwrap();
            client
        }
    };
    let vetoed = |result: Result<state_sync_client::Applied, Error>| {
        assert!(
            matches!(
                &result,
                Err(Error::Update(UpdateFailure::Rejected {
                    reason: FailureReason::Vetoed,
                    ..
                }))
            ),
            "expected a veto, got {result:?}"
        );
    };

    // Rewritten: the webhook receives the update, with its operations, and the sender's
    // identifier and claims; what it answers is applied.
    let alice = client("rewritten").await;
    let applied = alice
        .apply(
            Update::new()
                .set_key("text", "hi")
                .append("log", [json!("first")]),
        )
        .await
        .unwrap();
    assert_eq!(applied.updates["author"], "Alice");
    assert_eq!(alice.state()["log"], json!(["first"]));
    assert_eq!(
        hooks.received("rewrite"),
        [json!({
            "state": "rewritten",
            "identifier": "alice",
            "clientInformation": {"name": "Alice"},
            "update": {"set": {"text": "hi"}, "ops": {"log": {"append": ["first"]}}}
        })]
    );
    alice.close().await;

    // Vetoed by the answer; an empty 204 lets the next one through unchanged.
    let alice = client("vetoed").await;
    vetoed(alice.update_state(json!({"forbidden": 1})).await);
    let applied = alice.update_state(json!({"fine": 1})).await.unwrap();
    assert_eq!(*applied.updates, *json!({"fine": 1}).as_object().unwrap());
    assert_eq!(applied.version, Some(1));
    alice.close().await;

    // Too slow: vetoed, or applied, by the policy, once the webhook's own time limit
    // passed (300 ms), long before the server's hook limit (3 s).
    for (state, allowed) in [("slow-reject", false), ("slow-allow", true)] {
        let alice = client(state).await;
        let started = Instant::now();
        let result = alice.update_state(json!({"n": 1})).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1400),
            "{state}: {took:?}"
        );
        if allowed {
            assert_eq!(result.unwrap().updates["n"], 1);
        } else {
            vetoed(result);
        }
        alice.close().await;
    }

    // Down, answering 403, answering nonsense: the same policy decides.
    for (state, allowed) in [
        ("down-reject", false),
        ("down-allow", true),
        ("forbidden-allow", true),
        ("misspelt-reject", false),
    ] {
        let alice = client(state).await;
        let result = alice.update_state(json!({"n": 2})).await;
        if allowed {
            assert_eq!(result.unwrap().updates["n"], 2, "{state}");
            assert_eq!(alice.state()["n"], 2, "{state}");
        } else {
            vetoed(result);
            assert!(alice.state().get("n").is_none(), "{state}");
        }
        alice.close().await;
    }
    assert_eq!(hooks.received("forbidden").len(), 1);
    assert_eq!(hooks.received("misspelt").len(), 1);
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let config = config_file(
        "json-logs",
        "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[[state]]\nid = \"s\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|log| log["level"] == "INFO" && log["fields"]["message"] == "stopping"),
        "{stderr}"
    );
}
