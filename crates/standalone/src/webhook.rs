//! A state's `interceptStateUpdate` as an HTTP webhook (`[state.webhook]` in the
//! configuration file), for those who do not write Rust.
//!
//! # Contract
//! Before each update of the state is applied, the server POSTs to `url` (with
//! `Content-Type: application/json` and the configured `headers`):
//!
//! ```json
//! {"state": "chat", "identifier": "alice", "clientInformation": {"sub": "alice"},
//!  "update": {"set": {"title": "Hi"}, "ops": {"messages": {"append": [{"text": "hi"}]}}}}
//! ```
//!
//! `set` holds the top-level keys the update replaces, `ops` its atomic operations on
//! other keys (`{"append": [..], "max": n}`, `{"increment": n}`, `{"remove": true}`,
//! as on the wire, see docs/protocol.md); `identifier` and `clientInformation` (the
//! sender's token claims, `{}` without authentication) are `null` for updates made by
//! the server itself. The webhook answers with a `2xx` status and:
//! - an empty body, or `{}`: apply the update unchanged;
//! - `{"update": {"set": {..}, "ops": {..}}}`: apply this update instead (either part
//!   may be left out and counts as empty; a key may not be both set and operated on);
//! - `{"veto": true}` (optionally with `"reason": ".."`, which is logged): do not apply
//!   it. The sender is told the update was vetoed (reason `vetoed`), others see nothing.
//!
//! # Failure policy
//! Anything else is a failure of the webhook: it cannot be reached, it does not
//! answer in full within `timeout` (default 2 s, which must be shorter than the server's
//! `limits.hook-timeout`, so that the policy, not the server's own limit, decides), it
//! answers a status other than 2xx (a 4xx is a failure too, not a veto: only an answer
//! says no), a body over the state size limit, or a body that is not one of the three
//! answers above (unknown fields included: a misspelt `"vetoo"` must not let an update
//! through). What happens then is the state's `on-failure`:
//! - `"reject"` (the default): the update is vetoed, as if the webhook had said so;
//! - `"allow"`: the update is applied unchanged.
//!
//! Every failure is logged as a warning, with the state, the URL, the cause and the
//! decision taken. There are no retries: the client's own retry (our clients resend an
//! update that was not acknowledged) is the retry, and a vetoed update is not retried.
//!
//! # Why a blocking client (ureq)
//! The server runs `intercept_state_update` synchronously on tokio's blocking pool,
//! so the webhook call blocks that pool thread and nothing else. ureq is a small
//! blocking HTTP/1.1 client that needs no runtime: an async client (reqwest, hyper)
//! would need a second runtime inside the hook or a `block_on` on the server's, and
//! reqwest's blocking mode starts a runtime thread of its own. One agent per webhook
//! keeps its connections alive between updates. Proxies from the environment are not
//! used: webhooks are usually internal services. `https://` URLs work (rustls, with
//! the Mozilla root certificates).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use state_sync_server::JsonObject;
use state_sync_server::protocol::{Update, UpdateState};

use crate::auth::Client;
use crate::locate::{Invalid, Step};
use crate::units::Span;

/// How long a webhook may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// `[state.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct WebhookConfig {
    url: String,
    timeout: Option<Span>,
    #[serde(default)]
    on_failure: FailurePolicy,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What an update becomes when its webhook fails.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FailurePolicy {
    /// Vetoed.
    #[default]
    Reject,
    /// Applied unchanged.
    Allow,
}

/// A state's webhook, ready to call.
pub(crate) struct Webhook {
    state: String,
    url: String,
    headers: Vec<(String, String)>,
    policy: FailurePolicy,
    /// The largest answer read, in bytes.
    max_answer: u64,
    agent: ureq::Agent,
}

/// What the webhook decided.
#[derive(Debug, PartialEq)]
enum Verdict {
    Unchanged,
    Rewritten(Update),
    Vetoed(Option<String>),
}

impl WebhookConfig {
    /// Checks the webhook of the state at `index` of the file (named `state`) and
    /// prepares its client. `hook_timeout` is the server's limit for hooks;
    /// `max_answer` the largest answer read.
    pub(crate) fn build(
        self,
        index: usize,
        state: &str,
        hook_timeout: Duration,
        max_answer: usize,
    ) -> Result<Webhook, Invalid> {
        let here = |key: &'static str| {
            [
                Step::Key("state"),
                Step::Index(index),
                Step::Key("webhook"),
                Step::Key(key),
            ]
        };
        let uri: ureq::http::Uri = self
            .url
            .parse()
            .map_err(|e| Invalid::new(here("url"), format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Invalid::new(
                here("url"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |span| span.0);
        if timeout.is_zero() || timeout >= hook_timeout {
            return Err(Invalid::new(
                here("timeout"),
                format!(
                    "must be longer than 0 and shorter than limits.hook-timeout ({hook_timeout:?}): \
                     past that the server abandons the hook and fails the update itself"
                ),
            ));
        }
        for (name, value) in &self.headers {
            let valid = ureq::http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && ureq::http::HeaderValue::from_str(value).is_ok();
            if !valid {
                return Err(Invalid::new(
                    here("headers"),
                    format!("{name:?} is not a valid HTTP header with its value"),
                ));
            }
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .proxy(None)
                .build(),
        );
        Ok(Webhook {
            state: state.to_owned(),
            url: self.url,
            headers: self.headers.into_iter().collect(),
            policy: self.on_failure,
            max_answer: max_answer as u64,
            agent,
        })
    }
}

impl Webhook {
    /// The state's interceptor: the update to apply, or `None` to veto it.
    pub(crate) fn intercept(&self, update: Update, client: Option<&Client>) -> Option<Update> {
        match self.call(&update, client) {
            Ok(Verdict::Unchanged) => Some(update),
            Ok(Verdict::Rewritten(mut rewritten)) => {
                rewritten.expected_version = update.expected_version;
                Some(rewritten)
            }
            Ok(Verdict::Vetoed(reason)) => {
                tracing::debug!(state = %self.state, reason = reason.as_deref().unwrap_or(""), "webhook vetoed an update");
                None
            }
            Err(cause) => {
                let decision = match self.policy {
                    FailurePolicy::Reject => "the update is vetoed (on-failure = \"reject\")",
                    FailurePolicy::Allow => {
                        "the update is applied unchanged (on-failure = \"allow\")"
                    }
                };
                tracing::warn!(state = %self.state, url = %self.url, "webhook failed: {cause}; {decision}");
                (self.policy == FailurePolicy::Allow).then_some(update)
            }
        }
    }

    fn call(&self, update: &Update, client: Option<&Client>) -> Result<Verdict, String> {
        let body = request_body(&self.state, update, client)?;
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut response = request.send(body.as_bytes()).map_err(|e| e.to_string())?;
        let status = response.status();
        let answer = response
            .body_mut()
            .with_config()
            .limit(self.max_answer)
            .read_to_string()
            .map_err(|e| format!("reading its answer: {e}"))?;
        if !status.is_success() {
            let excerpt: String = answer.chars().take(200).collect();
            return Err(format!("it answered HTTP {status}: {excerpt}"));
        }
        parse_answer(&answer)
    }
}

/// The JSON the webhook receives.
fn request_body(state: &str, update: &Update, client: Option<&Client>) -> Result<String, String> {
    // The protocol's own encoding of operations, so that the webhook sees them as
    // they are on the wire.
    let wire = serde_json::to_value(UpdateState {
        updates: update.set.clone(),
        request_id: None,
        ops: update.ops.clone(),
        if_version: None,
    })
    .map_err(|e| format!("encoding the update: {e}"))?;
    let body = json!({
        "state": state,
        "identifier": client.map(|c| c.identifier.as_str()),
        "clientInformation": client.map(|c| &c.information),
        "update": {
            "set": wire.get("updates").cloned().unwrap_or_else(|| json!({})),
            "ops": wire.get("ops").cloned().unwrap_or_else(|| json!({})),
        },
    });
    Ok(body.to_string())
}

/// Reads the webhook's answer (see the contract above).
fn parse_answer(answer: &str) -> Result<Verdict, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Answer {
        update: Option<AnswerUpdate>,
        #[serde(default)]
        veto: bool,
        reason: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AnswerUpdate {
        #[serde(default)]
        set: JsonObject,
        #[serde(default)]
        ops: Option<Value>,
    }
    if answer.trim().is_empty() {
        return Ok(Verdict::Unchanged);
    }
    let invalid = |why: String| format!("invalid answer ({why}): {}", excerpt(answer));
    let answer: Answer = serde_json::from_str(answer).map_err(|e| invalid(e.to_string()))?;
    match (answer.veto, answer.update) {
        (true, Some(_)) => Err(invalid("both veto and update".into())),
        (true, None) => Ok(Verdict::Vetoed(answer.reason)),
        (false, None) => Ok(Verdict::Unchanged),
        (false, Some(rewritten)) => {
            // Operations are read by the protocol's own decoder, with its messages.
            let mut wire = json!({"updates": rewritten.set});
            if let Some(ops) = rewritten.ops {
                wire["ops"] = ops;
            }
            let decoded: UpdateState = serde_json::from_value(wire)
                .map_err(|e| invalid(e.to_string().replace("data.ops", "update.ops")))?;
            let update = Update {
                set: decoded.updates,
                ops: decoded.ops,
                expected_version: None,
            };
            update.check_keys().map_err(|e| invalid(e.to_string()))?;
            Ok(Verdict::Rewritten(update))
        }
    }
}

fn excerpt(text: &str) -> String {
    let mut excerpt: String = text.chars().take(200).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_sync_server::protocol::Operation;

    #[test]
    fn the_three_answers() {
        assert_eq!(parse_answer(""), Ok(Verdict::Unchanged));
        assert_eq!(parse_answer(" {} "), Ok(Verdict::Unchanged));
        assert_eq!(
            parse_answer(r#"{"veto": true, "reason": "no"}"#),
            Ok(Verdict::Vetoed(Some("no".into())))
        );
        let rewritten = parse_answer(
            r#"{"update": {"set": {"a": 1}, "ops": {"n": {"increment": 2}, "l": {"append": [1], "max": 3}}}}"#,
        );
        assert_eq!(
            rewritten,
            Ok(Verdict::Rewritten(
                Update::new()
                    .set_key("a", 1)
                    .increment("n", 2)
                    .append_capped("l", [json!(1)], 3)
            ))
        );
        assert_eq!(
            parse_answer(r#"{"update": {"ops": {"k": {"remove": true}}}}"#),
            Ok(Verdict::Rewritten(Update {
                ops: vec![("k".into(), Operation::Remove)],
                ..Update::default()
            }))
        );
    }

    #[test]
    fn anything_else_is_a_failure() {
        for bad in [
            "nope",
            "[]",
            r#"{"vetoo": true}"#,
            r#"{"veto": "yes"}"#,
            r#"{"veto": true, "update": {}}"#,
            r#"{"update": {"set": 3}}"#,
            r#"{"update": {"updates": {}}}"#,
            r#"{"update": {"ops": {"k": {"double": 1}}}}"#,
            r#"{"update": {"set": {"k": 1}, "ops": {"k": {"remove": true}}}}"#,
        ] {
            let error = parse_answer(bad).expect_err(bad);
            assert!(error.starts_with("invalid answer"), "{error}");
        }
    }

    #[test]
    fn the_request_carries_the_update_as_on_the_wire() {
        let update = Update::new()
            .set_key("title", "Hi")
            .append("messages", [json!({"text": "hi"})]);
        let client = Client {
            identifier: "alice".into(),
            information: json!({"sub": "alice"}),
            access: crate::auth::Access::All,
        };
        let body: Value =
            serde_json::from_str(&request_body("chat", &update, Some(&client)).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"state": "chat", "identifier": "alice", "clientInformation": {"sub": "alice"},
                   "update": {"set": {"title": "Hi"}, "ops": {"messages": {"append": [{"text": "hi"}]}}}})
        );
        let body: Value =
            serde_json::from_str(&request_body("chat", &Update::new(), None).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"state": "chat", "identifier": null, "clientInformation": null,
                   "update": {"set": {}, "ops": {}}})
        );
    }
}
