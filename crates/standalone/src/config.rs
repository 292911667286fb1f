//! The configuration file (`state-sync-server --config state-sync.toml`): what it may
//! hold, and reading it into what the server needs. `examples/state-sync.toml` shows
//! every key, commented; the README's "Configuration file" explains them.
//!
//! Every table refuses keys it does not know, so a misspelt key is an error, not a
//! setting silently ignored. Every mistake, in the TOML itself, in a value, or found
//! after reading (a certificate that cannot be read, a webhook time limit above the
//! server's), is a [`ConfigError`] naming the file, the line and the key, and the
//! program exits before listening. Relative paths in the file are relative to the
//! file's folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use state_sync_server::{JsonObject, Redis, StateOptions, TlsConfig};

use crate::auth::{AuthConfig, Authenticator, Client};
use crate::limits::Limits;
use crate::locate::{ConfigError, Locator, Step};
use crate::units::Span;
use crate::webhook::{Webhook, WebhookConfig};

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    addr: Option<String>,
    data: Option<PathBuf>,
    redis: Option<String>,
    redis_cluster: Option<Vec<String>>,
    static_files: Option<PathBuf>,
    tls: Option<TlsFiles>,
    #[serde(default)]
    log: Log,
    #[serde(default)]
    limits: Limits,
    auth: Option<AuthConfig>,
    #[serde(default, rename = "state")]
    states: Vec<StateConfig>,
    #[serde(default)]
    metrics: MetricsConfig,
}

/// `[metrics]`: Prometheus metrics on the server's port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct MetricsConfig {
    /// Serve them (default true).
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// Where (default `/metrics`).
    #[serde(default = "metrics_path")]
    pub(crate) path: String,
    /// States whose attached clients get a label of their own; by default the states
    /// this file declares (the others are counted together, as `other`).
    pub(crate) states: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn metrics_path() -> String {
    "/metrics".to_owned()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            path: metrics_path(),
            states: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// `[log]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Log {
    #[serde(default)]
    pub(crate) format: LogFormat,
    /// A `RUST_LOG`-style filter; the `RUST_LOG` environment variable wins over it.
    pub(crate) level: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One `[[state]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StateConfig {
    id: String,
    #[serde(default, deserialize_with = "initial_value")]
    initial: JsonObject,
    ttl: Option<Span>,
    #[serde(default)]
    remove_when_empty: bool,
    #[serde(default)]
    reset_stored: bool,
    webhook: Option<WebhookConfig>,
}

/// An initial value: a TOML table, or a string holding a JSON object (for what TOML
/// cannot write, such as `null`).
fn initial_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JsonObject, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Initial {
        Table(JsonObject),
        Json(String),
    }
    let expected = "a table (initial = { messages = [] }) or a string holding a JSON object";
    match Initial::deserialize(deserializer)
        .map_err(|_| de::Error::custom(format!("expected {expected}")))?
    {
        Initial::Table(object) => Ok(object),
        Initial::Json(text) => match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(object)) => Ok(object),
            Ok(other) => Err(de::Error::custom(format!(
                "the JSON must be an object, not {}",
                state_sync_server::protocol::json_kind(&other)
            ))),
            Err(e) => Err(de::Error::custom(format!("invalid JSON: {e}"))),
        },
    }
}

/// Where the states are kept.
pub(crate) enum Store {
    /// In memory only.
    Memory,
    /// In a data directory.
    Data(PathBuf),
    /// In Redis (one server of a cluster).
    Redis(Redis),
}

/// A state to create at start.
pub(crate) struct StateSpec {
    pub(crate) id: String,
    initial: JsonObject,
    ttl: Option<Duration>,
    remove_when_empty: bool,
    reset_stored: bool,
    webhook: Option<Arc<Webhook>>,
}

impl StateSpec {
    /// A state with the value `{}` and nothing else (`--state ID`).
    pub(crate) fn plain(id: String) -> Self {
        StateSpec {
            id,
            initial: JsonObject::new(),
            ttl: None,
            remove_when_empty: false,
            reset_stored: false,
            webhook: None,
        }
    }

    /// The options to create it with. Every state checks which states a client may
    /// attach to (see `auth`).
    pub(crate) fn options(&self) -> StateOptions<Client> {
        let id = self.id.clone();
        let mut options = StateOptions::new()
            .identifier(self.id.as_str())
            .initial_value(self.initial.clone())
            .allow_connecting_client(move |client: &Client| client.may_attach(&id))
            .reset_stored(self.reset_stored);
        if let Some(ttl) = self.ttl {
            options = options.ttl(ttl);
        }
        if self.remove_when_empty {
            options = options.self_destruct(|clients, _created| clients == 0);
        }
        if let Some(webhook) = &self.webhook {
            let webhook = Arc::clone(webhook);
            options = options
                .intercept_state_update(move |update, client| webhook.intercept(update, client));
        }
        options
    }
}

/// What the file configures, checked and ready to use.
pub(crate) struct Config {
    pub(crate) addr: Option<String>,
    pub(crate) store: Store,
    pub(crate) static_files: Option<PathBuf>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) log: Log,
    pub(crate) limits: Limits,
    pub(crate) auth: Authenticator,
    pub(crate) states: Vec<StateSpec>,
    pub(crate) metrics: MetricsConfig,
}

impl Default for Config {
    /// Without a file: the defaults of the command line.
    fn default() -> Self {
        Config {
            addr: None,
            store: Store::Memory,
            static_files: None,
            tls: None,
            log: Log::default(),
            limits: Limits::default(),
            auth: Authenticator::default(),
            states: Vec::new(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Reads and checks the configuration file at `path`.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Locator::whole(path, format!("cannot read it: {e}")))?;
    parse(path, &text)
}

/// Checks the configuration `text` of the file at `path`.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let locator = Locator::new(path, text);
    let file: File = toml::from_str(text)
        .map_err(|e| locator.at(e.span(), e.message().trim_end().to_owned()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let relative = |file: PathBuf| base.join(file);

    let stores = [
        file.data.is_some().then_some("data"),
        file.redis.is_some().then_some("redis"),
        file.redis_cluster.is_some().then_some("redis-cluster"),
    ];
    let mut given = stores.iter().flatten();
    if let (Some(first), Some(second)) = (given.next(), given.next()) {
        return Err(locator.key(
            &[Step::Key(second)],
            format!("{first} and {second} do not go together: one place keeps the states"),
        ));
    }
    let store = if let Some(dir) = file.data {
        Store::Data(relative(dir))
    } else if let Some(url) = file.redis {
        Store::Redis(
            Redis::new(url).map_err(|e| locator.key(&[Step::Key("redis")], e.to_string()))?,
        )
    } else if let Some(nodes) = file.redis_cluster {
        Store::Redis(
            Redis::cluster(nodes)
                .map_err(|e| locator.key(&[Step::Key("redis-cluster")], e.to_string()))?,
        )
    } else {
        Store::Memory
    };

    let tls = match file.tls {
        None => None,
        Some(files) => {
            let read = |key: &'static str, file: PathBuf| {
                let path = relative(file);
                std::fs::read(&path).map_err(|e| {
                    locator.key(
                        &[Step::Key("tls"), Step::Key(key)],
                        format!("cannot read {}: {e}", path.display()),
                    )
                })
            };
            let cert = read("cert", files.cert)?;
            let key = read("key", files.key)?;
            Some(TlsConfig::from_pem(&cert, &key).map_err(|e| {
                let culprit = if e.to_string().contains("private key") {
                    "key"
                } else {
                    "cert"
                };
                locator.key(&[Step::Key("tls"), Step::Key(culprit)], e.to_string())
            })?)
        }
    };

    if let Some(level) = &file.log.level
        && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
    {
        return Err(locator.key(&[Step::Key("log"), Step::Key("level")], e.to_string()));
    }
    file.limits
        .check()
        .map_err(|(key, why)| locator.key(&[Step::Key("limits"), Step::Key(key)], why))?;

    let auth = match file.auth {
        Some(auth) => auth.build(base).map_err(|e| locator.invalid(e))?,
        None => Authenticator::default(),
    };

    let mut states: Vec<StateSpec> = Vec::new();
    for (index, state) in file.states.into_iter().enumerate() {
        let at = |key: &'static str| [Step::Key("state"), Step::Index(index), Step::Key(key)];
        if state.id.is_empty() {
            return Err(locator.key(&at("id"), "a state needs a non-empty id"));
        }
        if states.iter().any(|other| other.id == state.id) {
            return Err(locator.key(&at("id"), format!("state {:?} is declared twice", state.id)));
        }
        if state.ttl.is_some_and(|span| span.0.is_zero()) {
            return Err(locator.key(&at("ttl"), "must be longer than 0"));
        }
        let webhook = match state.webhook {
            Some(webhook) => Some(Arc::new(
                webhook
                    .build(
                        index,
                        &state.id,
                        file.limits.hook_timeout(),
                        file.limits.max_state_bytes().max(64 << 10),
                    )
                    .map_err(|e| locator.invalid(e))?,
            )),
            None => None,
        };
        states.push(StateSpec {
            id: state.id,
            initial: state.initial,
            ttl: state.ttl.map(|span| span.0),
            remove_when_empty: state.remove_when_empty,
            reset_stored: state.reset_stored,
            webhook,
        });
    }

    Ok(Config {
        addr: file.addr,
        store,
        static_files: file.static_files.map(relative),
        tls,
        log: file.log,
        limits: file.limits,
        auth,
        states,
        metrics: file.metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ConfigError {
        match parse(Path::new("dir/s.toml"), text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/state-sync.toml");
        let text = std::fs::read_to_string(&path).expect("examples/state-sync.toml");
        // Its secrets come from the environment and its files do not exist here:
        // check everything else by dropping what needs them.
        let text = text
            .replace("secret-env = \"JWT_SECRET\"", "secret = \"x\"")
            .replace("token-env = \"BOT_TOKEN\"", "token = \"y\"");
        let mut without_files = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with('[') {
                skipping = line == "[tls]";
            }
            if !skipping {
                without_files.push_str(line);
                without_files.push('\n');
            }
        }
        let config = parse(&path, &without_files).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.states.is_empty());
        assert!(config.states.iter().any(|state| state.webhook.is_some()));
    }

    #[test]
    fn the_readme_shows_the_shipped_example() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let example =
            std::fs::read_to_string(root.join("examples/state-sync.toml")).expect("example");
        let section = &readme[readme.find("### Configuration file").expect("the section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + section[start..].find("```\n").expect("its end");
        assert_eq!(
            section[start..end],
            example,
            "the README's copy of examples/state-sync.toml differs from it"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = error("addr = \"127.0.0.1:0\"\n\n[limits]\nmax-conections = 5\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.key.as_deref(), Some("limits.max-conections"), "{e}");
        assert!(e.message.contains("unknown field `max-conections`"), "{e}");
        let e = error("[[state]]\nid = \"a\"\n[[state]]\nid = \"b\"\nremove-when-emtpy = true\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("state[1].remove-when-emtpy"), "{e}");
    }

    #[test]
    fn wrong_types_are_named_with_their_line() {
        let e = error("[limits]\nmax-connections = \"many\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("limits.max-connections")),
            "{e}"
        );
        let e = error("[[state]]\nid = \"a\"\nttl = \"soon\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("state[0].ttl")),
            "{e}"
        );
        assert!(e.message.contains("\"soon\" is not a duration"), "{e}");
        let e = error("[[state]]\nid = \"a\"\ninitial = '[1]'\n");
        assert_eq!(e.key.as_deref(), Some("state[0].initial"), "{e}");
        assert!(e.message.contains("must be an object, not an array"), "{e}");
    }

    #[test]
    fn bad_toml_is_located() {
        let e = error("addr = \"x\"\n[limits\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(
            e.to_string()
                .starts_with("invalid configuration file dir/s.toml, line 2")
        );
    }

    #[test]
    fn mistakes_found_after_reading_are_located() {
        let e = error("data = \"d\"\nredis = \"redis://x/\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("redis")), "{e}");
        let e = error("[[state]]\nid = \"a\"\n[[state]]\nid = \"a\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("state[1].id")),
            "{e}"
        );
        let e = error(
            "[limits]\nhook-timeout = \"1s\"\n[[state]]\nid = \"a\"\nwebhook = { url = \"http://h/\", timeout = \"2s\" }\n",
        );
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("state[0].webhook.timeout"), "{e}");
        let e = error("[tls]\ncert = \"nope.pem\"\nkey = \"nope.pem\"\n");
        assert_eq!(e.key.as_deref(), Some("tls.cert"), "{e}");
        assert!(e.message.contains("dir/nope.pem"), "{e}");
        let e = error("[auth.jwt]\nalgorithm = \"RS256\"\nsecret = \"s\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("auth.jwt.secret")),
            "{e}"
        );
        let e = error("[auth.jwt]\nalgorithm = \"HS512\"\n");
        assert_eq!(e.key.as_deref(), Some("auth.jwt.algorithm"), "{e}");
        let e = error("addr = \"x\"\n[auth]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("auth")), "{e}");
        let e = error("[log]\nlevel = \"[[[\"\n");
        assert_eq!(e.key.as_deref(), Some("log.level"), "{e}");
    }

    #[test]
    fn initial_values_keep_the_file_order() {
        let config = parse(
            Path::new("s.toml"),
            "[[state]]\nid = \"a\"\ninitial = { zeta = 1, alpha = [], mid = { b = 1, a = 2 } }\n[[state]]\nid = \"b\"\ninitial = '{\"x\": null}'\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&String> = config.states[0].initial.keys().collect();
        assert_eq!(keys, ["zeta", "alpha", "mid"]);
        assert_eq!(
            serde_json::Value::Object(config.states[1].initial.clone()),
            serde_json::json!({"x": null})
        );
    }
}
