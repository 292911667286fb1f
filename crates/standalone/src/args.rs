//! The command line. Each flag overrides what the configuration file says.

use std::path::PathBuf;

pub(crate) const USAGE: &str = "usage: state-sync-server [--config FILE] [--addr HOST:PORT] [--data DIR | --redis URL | --redis-cluster URL,URL...] [--state ID]...

options:
  --config FILE      read the configuration file FILE (TOML): states with initial values,
                     ttl and removal when empty, authentication (static tokens, JWT HS256
                     or RS256), a webhook per state that may rewrite or veto updates, TLS,
                     limits, log format; examples/state-sync.toml shows every key. The
                     flags below override the file
  --addr HOST:PORT   where to listen (default 0.0.0.0:5000; port 0 picks a free one)
  --data DIR         save every state in DIR (created if missing); without it, states
                     live in memory only
  --redis URL        be one server of a cluster: keep the states in the Redis at URL
                     (redis://HOST:PORT/), shared with every server started with it
  --redis-cluster URL,URL...
                     the same on a Redis Cluster, reached through any of these nodes
                     (--data, --redis and --redis-cluster replace the file's store)
  --state ID         create the state ID with the value {} unless it exists (repeatable;
                     added to the file's states, whose options win for the same ID)
  --help             print this and exit

Clients connect to ws://HOST:PORT/?identifier=<client id>&token=<token>.
Logs go to stderr; RUST_LOG=debug shows more (it wins over the file's log level).
Exit status: 0 after SIGTERM or Ctrl-C, 2 for a bad command line or configuration file
(the message names the file, line and key), 1 when the server cannot start or fails.";

/// Where the flags say the states are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreFlag {
    Data(PathBuf),
    Redis(String),
    RedisCluster(Vec<String>),
}

#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) config: Option<PathBuf>,
    pub(crate) addr: Option<String>,
    pub(crate) store: Option<StoreFlag>,
    pub(crate) states: Vec<String>,
}

/// The arguments, or `None` for `--help`.
pub(crate) fn parse(mut words: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args::default();
    let mut stores = 0;
    while let Some(word) = words.next() {
        let mut value = |flag: &str| words.next().ok_or_else(|| format!("{flag} needs a value"));
        match word.as_str() {
            "--help" | "-h" => return Ok(None),
            "--config" => args.config = Some(value("--config")?.into()),
            "--addr" => args.addr = Some(value("--addr")?),
            "--data" => {
                args.store = Some(StoreFlag::Data(value("--data")?.into()));
                stores += 1;
            }
            "--redis" => {
                args.store = Some(StoreFlag::Redis(value("--redis")?));
                stores += 1;
            }
            "--redis-cluster" => {
                let nodes: Vec<String> = value("--redis-cluster")?
                    .split(',')
                    .filter(|node| !node.is_empty())
                    .map(str::to_owned)
                    .collect();
                if nodes.is_empty() {
                    return Err("--redis-cluster needs the URL of at least one node".into());
                }
                args.store = Some(StoreFlag::RedisCluster(nodes));
                stores += 1;
            }
            "--state" => {
                let id = value("--state")?;
                if id.is_empty() {
                    return Err("--state needs a non-empty identifier".into());
                }
                args.states.push(id);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if stores > 1 {
        return Err(
            "--data, --redis and --redis-cluster do not go together: one place keeps the states"
                .into(),
        );
    }
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> impl Iterator<Item = String> {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn flags_are_read() {
        let args = parse(words(
            "--config c.toml --addr 1.2.3.4:5 --state a --state b --redis-cluster r://1,r://2",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(args.config, Some(PathBuf::from("c.toml")));
        assert_eq!(args.addr.as_deref(), Some("1.2.3.4:5"));
        assert_eq!(args.states, ["a", "b"]);
        assert_eq!(
            args.store,
            Some(StoreFlag::RedisCluster(vec![
                "r://1".into(),
                "r://2".into()
            ]))
        );
        assert!(parse(words("--addr x --help")).unwrap().is_none());
        assert!(parse(words("--data d --redis r")).is_err());
        assert!(parse(words("--config")).is_err());
        assert!(parse(words("--state")).is_err());
    }
}
