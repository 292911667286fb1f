//! Authentication without writing Rust: the `[auth]` section of the configuration
//! file, and the authorization middleware and per-state check built from it.
//!
//! # Policy
//! - No `[auth]` section: every client with an identifier is accepted, may attach to
//!   every state, and its client information is `{}` (what the server did before).
//! - With one, a client must present a token: the `token` query parameter (what the
//!   clients send) or an `Authorization: Bearer` header. A token equal to one of the
//!   static `[[auth.token]]` entries is accepted with that entry's `claims` and
//!   `states`; otherwise, with `[auth.jwt]`, it must be a JWT signed with the
//!   configured key and algorithm (HS256 with a secret, RS256 with a PEM public key;
//!   no other algorithm is accepted, whatever the token's header says), whose `exp`
//!   has not passed and whose `nbf`, when present, has (both with `leeway`, 30 s by
//!   default), and whose `aud` and `iss` match when configured. Anything else is
//!   refused at the upgrade with HTTP 401 and the reason as the body.
//! - The client information is the token's claims (a JSON object): the webhooks see it.
//! - Which states a client may attach to: a static token's `states` (default `["*"]`,
//!   all of them); for a JWT, the claim named by `states-claim` (a list of state
//!   identifiers, or `"*"`), all states when no `states-claim` is configured, and none
//!   when it is configured but the token lacks the claim. Checked on every attach
//!   (`StateOptions::allow_connecting_client`): a refused attach gets
//!   STATE_CONNECTION_ERROR "Not allowed to connect to this state".
//! - With `identifier-claim` (e.g. `"sub"`), a JWT is accepted only from a client whose
//!   `identifier` equals that claim, so that nobody takes another's identifier (and
//!   its sessions).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use state_sync_server::{JsonObject, Rejection, UpgradeRequest};

use crate::locate::{Invalid, Step};
use crate::units::Span;

/// JWT time claims are checked with this much slack by default, for clock skew.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// A connected client, as the states and webhooks see it (the server's client
/// information `K`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Client {
    /// The `identifier` it connected with.
    pub(crate) identifier: String,
    /// Its token's claims (`{}` without authentication).
    pub(crate) information: Value,
    /// The states it may attach to.
    pub(crate) access: Access,
}

impl Client {
    pub(crate) fn may_attach(&self, state: &str) -> bool {
        match &self.access {
            Access::All => true,
            Access::Only(states) => states.contains(state),
        }
    }
}

/// The states a client may attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    All,
    Only(HashSet<String>),
}

impl Access {
    /// From a list of state identifiers, where `"*"` means all.
    fn from_list<'a>(states: impl IntoIterator<Item = &'a str>) -> Access {
        let mut only = HashSet::new();
        for state in states {
            if state == "*" {
                return Access::All;
            }
            only.insert(state.to_owned());
        }
        Access::Only(only)
    }

    /// From a claim: a list of identifiers, or one (`"*"` for all); anything else
    /// allows nothing.
    fn from_claim(claim: Option<&Value>) -> Access {
        match claim {
            Some(Value::String(state)) => Access::from_list([state.as_str()]),
            Some(Value::Array(states)) => {
                Access::from_list(states.iter().filter_map(Value::as_str))
            }
            _ => Access::Only(HashSet::new()),
        }
    }
}

/// The `[auth]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct AuthConfig {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenConfig>,
    jwt: Option<JwtConfig>,
}

/// One `[[auth.token]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TokenConfig {
    token: Option<String>,
    token_env: Option<String>,
    states: Option<Vec<String>>,
    #[serde(default)]
    claims: JsonObject,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum JwtAlgorithm {
    HS256,
    RS256,
}

/// `[auth.jwt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct JwtConfig {
    algorithm: JwtAlgorithm,
    secret: Option<String>,
    secret_env: Option<String>,
    public_key: Option<std::path::PathBuf>,
    leeway: Option<Span>,
    audience: Option<String>,
    issuer: Option<String>,
    states_claim: Option<String>,
    identifier_claim: Option<String>,
}

/// Decides who may connect, and what each client may do.
pub(crate) struct Authenticator {
    /// Without `[auth]`: everybody, everywhere.
    open: bool,
    tokens: Vec<StaticToken>,
    jwt: Option<Jwt>,
}

struct StaticToken {
    token: String,
    information: Value,
    access: Access,
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
    states_claim: Option<String>,
    identifier_claim: Option<String>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            open: true,
            tokens: Vec::new(),
            jwt: None,
        }
    }
}

/// A secret given inline or in an environment variable (exactly one).
fn secret(
    inline: Option<String>,
    env: Option<&str>,
    at: &[Step<'static>],
    names: (&'static str, &'static str),
) -> Result<Option<String>, Invalid> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(Invalid::new(
            at.iter().copied().chain([Step::Key(names.1)]),
            format!("give {} or {}, not both", names.0, names.1),
        )),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(variable)) => match std::env::var(variable) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(Invalid::new(
                at.iter().copied().chain([Step::Key(names.1)]),
                format!("the environment variable {variable} is not set (or empty)"),
            )),
        },
        (None, None) => Ok(None),
    }
}

impl AuthConfig {
    /// Checks the section and reads the keys it names (paths relative to `base`).
    pub(crate) fn build(self, base: &Path) -> Result<Authenticator, Invalid> {
        if self.tokens.is_empty() && self.jwt.is_none() {
            return Err(Invalid::new(
                [Step::Key("auth")],
                "needs [[auth.token]] entries or [auth.jwt]: as it is, nobody could connect",
            ));
        }
        let mut tokens = Vec::new();
        for (index, entry) in self.tokens.into_iter().enumerate() {
            let at = [Step::Key("auth"), Step::Key("token"), Step::Index(index)];
            let token = secret(
                entry.token,
                entry.token_env.as_deref(),
                &at,
                ("token", "token-env"),
            )?
            .ok_or_else(|| Invalid::new(at, "needs token (or token-env)"))?;
            let access = match &entry.states {
                Some(states) => Access::from_list(states.iter().map(String::as_str)),
                None => Access::All,
            };
            tokens.push(StaticToken {
                token,
                information: Value::Object(entry.claims),
                access,
            });
        }
        let jwt = self.jwt.map(|jwt| jwt.build(base)).transpose()?;
        Ok(Authenticator {
            open: false,
            tokens,
            jwt,
        })
    }
}

impl JwtConfig {
    fn build(self, base: &Path) -> Result<Jwt, Invalid> {
        let at = [Step::Key("auth"), Step::Key("jwt")];
        let here = |key: &'static str| at.iter().copied().chain([Step::Key(key)]);
        let secret = secret(
            self.secret,
            self.secret_env.as_deref(),
            &at,
            ("secret", "secret-env"),
        )?;
        let (key, algorithm) = match self.algorithm {
            JwtAlgorithm::HS256 => {
                if self.public_key.is_some() {
                    return Err(Invalid::new(
                        here("public-key"),
                        "HS256 uses a shared secret (secret or secret-env), not a public key",
                    ));
                }
                let secret = secret.ok_or_else(|| {
                    Invalid::new(here("algorithm"), "HS256 needs secret (or secret-env)")
                })?;
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::RS256 => {
                if secret.is_some() {
                    return Err(Invalid::new(
                        here("secret"),
                        "RS256 verifies with a public key (public-key), not a secret",
                    ));
                }
                let file = self.public_key.ok_or_else(|| {
                    Invalid::new(
                        here("algorithm"),
                        "RS256 needs public-key (a PEM file of the RSA public key)",
                    )
                })?;
                let path = base.join(file);
                let pem = std::fs::read(&path).map_err(|e| {
                    Invalid::new(
                        here("public-key"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    Invalid::new(
                        here("public-key"),
                        format!("{} is not a PEM RSA public key: {e}", path.display()),
                    )
                })?;
                (key, Algorithm::RS256)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.map_or(DEFAULT_LEEWAY, |span| span.0).as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Jwt {
            key,
            validation,
            states_claim: self.states_claim,
            identifier_claim: self.identifier_claim,
        })
    }
}

/// Compares without stopping at the first difference, so that the time taken does
/// not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// The authorization middleware: the client, or why it is refused (HTTP 401).
    pub(crate) fn authorize(&self, request: &UpgradeRequest) -> Result<Client, Rejection> {
        let client = |information, access| Client {
            identifier: request.identifier.clone(),
            information,
            access,
        };
        if self.open {
            return Ok(client(Value::Object(JsonObject::new()), Access::All));
        }
        let bearer = request
            .header("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let token = request
            .token
            .as_deref()
            .or(bearer)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Rejection::new("missing token"))?;
        let mut matched = None;
        for entry in &self.tokens {
            if same(entry.token.as_bytes(), token.as_bytes()) {
                matched = Some(entry);
            }
        }
        if let Some(entry) = matched {
            return Ok(client(entry.information.clone(), entry.access.clone()));
        }
        let Some(jwt) = &self.jwt else {
            return Err(Rejection::new("invalid token"));
        };
        let claims = jsonwebtoken::decode::<JsonObject>(token, &jwt.key, &jwt.validation)
            .map_err(|e| Rejection::new(jwt_refusal(e.kind())))?
            .claims;
        if let Some(name) = &jwt.identifier_claim
            && claims.get(name).and_then(Value::as_str) != Some(request.identifier.as_str())
        {
            return Err(Rejection::new(format!(
                "the identifier is not the token's {name} claim"
            )));
        }
        let access = match &jwt.states_claim {
            Some(name) => Access::from_claim(claims.get(name)),
            None => Access::All,
        };
        Ok(client(Value::Object(claims), access))
    }
}

/// Why a JWT is refused, for the client.
fn jwt_refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "invalid token signature".into(),
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted".into(),
        ErrorKind::InvalidAudience => "token audience not accepted".into(),
        ErrorKind::InvalidIssuer => "token issuer not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token without the {claim} claim"),
        _ => "invalid token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_from_lists_and_claims() {
        assert_eq!(Access::from_list(["a", "*"]), Access::All);
        let only = Access::from_list(["a", "b"]);
        assert_eq!(only, Access::Only(["a".into(), "b".into()].into()));
        assert_eq!(Access::from_claim(Some(&"*".into())), Access::All);
        assert_eq!(
            Access::from_claim(Some(&serde_json::json!(["x", 3]))),
            Access::Only(["x".into()].into())
        );
        assert_eq!(
            Access::from_claim(None),
            Access::Only(HashSet::new()),
            "a missing claim allows nothing"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
