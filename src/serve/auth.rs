//! Who may use `stategraph serve`: the tokens file, and checking a
//! request's credentials against it.
//!
//! A tokens file is a JSON array of entries, each with a `name` (the
//! identity recorded in the transaction log), a secret — a `token` (sent as
//! `Authorization: Bearer TOKEN`, or as the password of basic auth with any
//! user name, which is how terraform's `http` backend sends it) or a
//! `username` and `password` (basic auth) — a `scope` (a state name, a
//! prefix ending in `*`, or `*` for every state) and an `access`
//! (`read-write` or `read-only`). Secrets are compared through their
//! SHA-256 digests in constant time and never printed.
//!
//! This module reads the file and decides; it must not answer requests
//! (the layer in [`super`] does).

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What an entry may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET a state (terraform_remote_state) and read the web page.
    ReadOnly,
    /// Everything: GET, POST, LOCK, UNLOCK, DELETE.
    ReadWrite,
}

/// Which states an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Prefix(String),
    Exact(String),
}

impl Scope {
    fn parse(text: &str) -> Scope {
        match text {
            "*" => Scope::All,
            _ => match text.strip_suffix('*') {
                Some(prefix) => Scope::Prefix(prefix.to_owned()),
                None => Scope::Exact(text.to_owned()),
            },
        }
    }

    fn covers(&self, state: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Prefix(p) => state.starts_with(p.as_str()),
            Scope::Exact(name) => name == state,
        }
    }
}

type Secret = [u8; 32];

fn digest(text: &str) -> Secret {
    Sha256::digest(text.as_bytes()).into()
}

/// Equality of two digests that takes as long whatever they hold.
fn same(a: &Secret, b: &Secret) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone)]
enum Credential {
    Token(Secret),
    Basic { username: String, password: Secret },
}

/// One entry of the tokens file, its secret kept as a digest.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    credential: Credential,
    scope: Scope,
    access: Access,
}

/// An entry as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    scope: String,
    access: String,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The entry's name (`anonymous` when the server has no tokens file).
    pub name: String,
    scope: Scope,
    access: Access,
}

impl Identity {
    /// Whether this caller may read (`write` false) or write state `name`.
    pub fn allows(&self, state: &str, write: bool) -> bool {
        self.scope.covers(state) && (!write || self.access == Access::ReadWrite)
    }

    /// Whether this caller may read the web page (which lists every state).
    pub fn reads_everything(&self) -> bool {
        self.scope == Scope::All
    }
}

/// Why a request was refused before reaching a handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or none that match an entry: 401.
    Unauthenticated,
}

/// The server's rules: open (no tokens file) or the file's entries.
#[derive(Debug, Clone)]
pub struct Auth {
    entries: Option<Vec<Entry>>,
}

impl Auth {
    /// Nobody is asked for credentials: everyone may read and write every state.
    pub fn open() -> Auth {
        Auth { entries: None }
    }

    /// Whether a tokens file is in force.
    pub fn is_open(&self) -> bool {
        self.entries.is_none()
    }

    /// Reads the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Auth> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
        Auth::parse(&text).with_context(|| {
            format!(
                "the tokens file {} is not valid (stategraph serve --help shows its format)",
                path.display()
            )
        })
    }

    fn parse(text: &str) -> Result<Auth> {
        let raw: Vec<RawEntry> = serde_json::from_str(text)
            .context("expected a JSON array of {name, token | username+password, scope, access}")?;
        let mut entries = Vec::new();
        for (i, e) in raw.into_iter().enumerate() {
            let at = format!("entry {} (\"{}\")", i + 1, e.name);
            if e.name.is_empty() {
                bail!("entry {} has an empty name", i + 1);
            }
            let credential = match (e.token, e.username, e.password) {
                (Some(t), None, None) if !t.is_empty() => Credential::Token(digest(&t)),
                (None, Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Credential::Basic {
                    username: u,
                    password: digest(&p),
                },
                _ => bail!("{at} needs either a non-empty token, or a username and a password"),
            };
            let access = match e.access.as_str() {
                "read-write" => Access::ReadWrite,
                "read-only" => Access::ReadOnly,
                other => bail!("{at}: access is \"{other}\"; use read-write or read-only"),
            };
            if e.scope.is_empty() {
                bail!("{at}: the scope is empty; give a state name, a prefix ending in *, or *");
            }
            let reused =
                entries
                    .iter()
                    .position(|known: &Entry| match (&known.credential, &credential) {
                        (Credential::Token(a), Credential::Token(b)) => same(a, b),
                        (
                            Credential::Basic { username: a, .. },
                            Credential::Basic { username: b, .. },
                        ) => a == b,
                        _ => false,
                    });
            if let Some(j) = reused {
                let what = match credential {
                    Credential::Token(_) => "token",
                    Credential::Basic { .. } => "username",
                };
                bail!(
                    "{at} has the same {what} as entry {} (\"{}\"): a caller could not be told \
                     from the other; give each its own",
                    j + 1,
                    entries[j].name
                );
            }
            entries.push(Entry {
                name: e.name,
                credential,
                scope: Scope::parse(&e.scope),
                access,
            });
        }
        if entries.is_empty() {
            bail!("it has no entries: nobody could use the server");
        }
        Ok(Auth {
            entries: Some(entries),
        })
    }

    /// The caller a request's `Authorization` header names.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, Refusal> {
        let Some(entries) = &self.entries else {
            return Ok(Identity {
                name: "anonymous".to_owned(),
                scope: Scope::All,
                access: Access::ReadWrite,
            });
        };
        let header = authorization.ok_or(Refusal::Unauthenticated)?.trim();
        let (scheme, value) = header.split_once(' ').ok_or(Refusal::Unauthenticated)?;
        let value = value.trim();
        let found = if scheme.eq_ignore_ascii_case("bearer") {
            let given = digest(value);
            entries
                .iter()
                .find(|e| matches!(&e.credential, Credential::Token(t) if same(t, &given)))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(Refusal::Unauthenticated)?;
            let (user, password) = decoded.split_once(':').ok_or(Refusal::Unauthenticated)?;
            let given = digest(password);
            entries.iter().find(|e| match &e.credential {
                Credential::Token(t) => same(t, &given),
                Credential::Basic { username, password } => {
                    // Both compared, whatever the first gives.
                    let user_ok = same(&digest(username), &digest(user));
                    same(password, &given) & user_ok
                }
            })
        } else {
            None
        };
        let e = found.ok_or(Refusal::Unauthenticated)?;
        Ok(Identity {
            name: e.name.clone(),
            scope: e.scope.clone(),
            access: e.access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[
        {"name": "ci", "token": "t0k3n", "scope": "envs/*", "access": "read-write"},
        {"name": "reader", "username": "remote", "password": "pw", "scope": "*", "access": "read-only"},
        {"name": "one", "token": "single", "scope": "github.com/acme/infra//envs/prod", "access": "read-write"}
    ]"#;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn bearer_and_basic_find_their_entry() {
        let auth = Auth::parse(FILE).unwrap();
        let ci = auth.authenticate(Some("Bearer t0k3n")).unwrap();
        assert_eq!(ci.name, "ci");
        // terraform sends a token as basic auth's password, any user name.
        let ci = auth
            .authenticate(Some(&basic("terraform", "t0k3n")))
            .unwrap();
        assert_eq!(ci.name, "ci");
        let reader = auth.authenticate(Some(&basic("remote", "pw"))).unwrap();
        assert_eq!(reader.name, "reader");
    }

    #[test]
    fn wrong_or_missing_credentials_are_refused() {
        let auth = Auth::parse(FILE).unwrap();
        for header in [
            None,
            Some("Bearer nope"),
            Some("Bearer"),
            Some("Token t0k3n"),
            Some(basic("other", "pw").as_str()),
            Some(basic("remote", "PW").as_str()),
            Some("Basic !!!"),
        ] {
            assert_eq!(
                auth.authenticate(header).unwrap_err(),
                Refusal::Unauthenticated,
                "{header:?}"
            );
        }
    }

    #[test]
    fn scopes_and_access_decide_what_a_caller_may_do() {
        let auth = Auth::parse(FILE).unwrap();
        let ci = auth.authenticate(Some("Bearer t0k3n")).unwrap();
        assert!(ci.allows("envs/prod", true));
        assert!(!ci.allows("other/prod", false));
        assert!(!ci.reads_everything());
        let reader = auth.authenticate(Some(&basic("remote", "pw"))).unwrap();
        assert!(reader.allows("anything", false));
        assert!(!reader.allows("anything", true));
        assert!(reader.reads_everything());
        let one = auth.authenticate(Some("Bearer single")).unwrap();
        assert!(one.allows("github.com/acme/infra//envs/prod", true));
        assert!(!one.allows("github.com/acme/infra//envs/prod2", true));
    }

    #[test]
    fn without_a_file_everyone_may_do_everything() {
        let who = Auth::open().authenticate(None).unwrap();
        assert!(who.allows("x", true) && who.reads_everything());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = |text: &str| format!("{:#}", Auth::parse(text).unwrap_err());
        assert!(err("[]").contains("no entries"), "{}", err("[]"));
        let both = r#"[{"name":"a","token":"t","username":"u","password":"p","scope":"*","access":"read-only"}]"#;
        assert!(
            err(both).contains("either a non-empty token"),
            "{}",
            err(both)
        );
        let access = r#"[{"name":"a","token":"t","scope":"*","access":"admin"}]"#;
        assert!(
            err(access).contains("read-write or read-only"),
            "{}",
            err(access)
        );
        let typo = r#"[{"name":"a","tokn":"t","scope":"*","access":"read-only"}]"#;
        assert!(err(typo).contains("unknown field"), "{}", err(typo));
        let twice = r#"[{"name":"a","token":"s3cret","scope":"*","access":"read-only"},
                        {"name":"b","token":"s3cret","scope":"x","access":"read-write"}]"#;
        assert!(
            err(twice).contains("entry 2 (\"b\") has the same token as entry 1 (\"a\")")
                && !err(twice).contains("s3cret"),
            "{}",
            err(twice)
        );
        let user = r#"[{"name":"a","username":"u","password":"p","scope":"*","access":"read-only"},
                       {"name":"b","username":"u","password":"q","scope":"*","access":"read-only"}]"#;
        assert!(err(user).contains("same username"), "{}", err(user));
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        assert!(same(&digest("a"), &digest("a")));
        assert!(!same(&digest("a"), &digest("b")));
    }
}
