//! JSON bodies of `POST /acquire`, `/release` and `/extend`, into [`Request`]s, and of
//! `POST /cluster/members`. Pure; strings are borrowed from the body unless they contain
//! escapes.
//!
//! As in the reference server: `resource` and `owner` are required strings, `expire` is in
//! seconds, unknown fields are ignored. Beyond it: `expire` and `wait` may be fractional
//! (millisecond precision, rounded up), and `token` may be a number or a decimal string (so
//! that JavaScript, whose numbers stop at 2^53, can send any token). A release with
//! `"force": true` and no `owner` frees the lock whoever holds it (an operator's tool); one
//! without `force` (or with `false` or `null`) is read, and refused, as the reference reads it.
//!
//! A body of plain values (nearly all) is read by [`flat`] into the same fields serde_json
//! would fill; any other is read by serde_json.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

use crate::api::{ClusterOp, MAX_TTL_MS, MAX_WAIT_MS, NO_SESSION, Request};

use super::flat::{self, Value};

/// A lock request read from a body.
pub type BodyRequest<'b> = Request<Cow<'b, str>>;

// One body type per endpoint, so that a field another endpoint reads is ignored here like any
// unknown field (a `wait` sent to `/release` is not checked, nor refused).

/// The body of `POST /acquire`.
#[derive(Deserialize, Debug, PartialEq)]
struct AcquireBody<'a> {
    #[serde(borrow)]
    resource: Cow<'a, str>,
    #[serde(borrow)]
    owner: Cow<'a, str>,
    #[serde(default)]
    expire: Option<f64>,
    #[serde(default)]
    wait: Option<f64>,
}

/// The body of `POST /release`: by its owner, or (`"force": true`) whoever holds it.
#[derive(Deserialize, Debug, PartialEq)]
struct AnyReleaseBody<'a> {
    #[serde(borrow)]
    resource: Cow<'a, str>,
    #[serde(borrow, default)]
    owner: Option<Name<'a>>,
    #[serde(default, deserialize_with = "token")]
    token: Option<u64>,
    #[serde(default)]
    force: Option<bool>,
}

/// A string borrowed from the body unless it has escapes (an `Option<Cow<str>>` field alone
/// would always be copied).
#[derive(Deserialize, Debug, PartialEq)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// The body of `POST /release` as the reference server reads it, `owner` required, named as
/// it always was (serde's messages name it): read again only to refuse a body without `force`
/// in the very words a release always got.
#[derive(Deserialize)]
struct ReleaseBody<'a> {
    #[serde(borrow, rename = "resource")]
    _resource: Cow<'a, str>,
    #[serde(borrow, rename = "owner")]
    _owner: Cow<'a, str>,
    #[serde(default, deserialize_with = "token", rename = "token")]
    _token: Option<u64>,
}

/// Whether a body that could not be read has a `force` field.
#[derive(Deserialize)]
struct ForceField {
    #[serde(default)]
    force: Option<serde::de::IgnoredAny>,
}

/// Why a forced release naming an owner is refused.
pub const FORCE_WITH_OWNER: &str =
    "`force` frees the lock whoever holds it: send no `owner` with it (or leave `force` out)";

/// The body of `POST /extend`.
#[derive(Deserialize, Debug, PartialEq)]
struct ExtendBody<'a> {
    #[serde(borrow)]
    resource: Cow<'a, str>,
    #[serde(borrow)]
    owner: Cow<'a, str>,
    #[serde(default)]
    expire: Option<f64>,
    #[serde(default, deserialize_with = "token")]
    token: Option<u64>,
}

/// Parses the body of `POST /acquire`.
pub fn acquire(body: &[u8]) -> Result<BodyRequest<'_>, String> {
    let b = read(body, AcquireBody::flat)?;
    let ttl = b.expire.map(|s| millis(s, "expire", MAX_TTL_MS)).transpose()?;
    let wait = b.wait.map(|s| millis(s, "wait", MAX_WAIT_MS)).transpose()?.unwrap_or(0);
    Ok(Request::Acquire { resource: b.resource, owner: b.owner, ttl, wait, session: NO_SESSION })
}

/// Parses the body of `POST /release`: a release by its owner, or a forced one.
pub fn release(body: &[u8]) -> Result<BodyRequest<'_>, String> {
    // In the reference's words: how a release without `force`, or without an owner, is refused.
    let reference = |e: String| parse::<ReleaseBody<'_>>(body).err().unwrap_or(e);
    let b = read(body, AnyReleaseBody::flat).map_err(|e| match parse::<ForceField>(body) {
        Ok(ForceField { force: Some(_) }) => e,
        _ => reference(e),
    })?;
    match (b.force, b.owner) {
        (Some(true), None) => Ok(Request::ForceRelease { resource: b.resource, token: b.token }),
        (Some(true), Some(_)) => Err(FORCE_WITH_OWNER.into()),
        (_, Some(Name(owner))) => Ok(Request::Release { resource: b.resource, owner, token: b.token }),
        (_, None) => Err(reference("missing field `owner`".into())),
    }
}

/// Parses the body of `POST /extend` (`expire` is required: the new lease length).
pub fn extend(body: &[u8]) -> Result<BodyRequest<'_>, String> {
    let b = read(body, ExtendBody::flat)?;
    let Some(expire) = b.expire else {
        return Err("missing field `expire`".into());
    };
    let ttl = Some(millis(expire, "expire", MAX_TTL_MS)?);
    Ok(Request::Extend { resource: b.resource, owner: b.owner, token: b.token, ttl })
}

/// The body of `POST /cluster/members`.
#[derive(Deserialize)]
struct MemberBody {
    id: u64,
    /// Its consensus address.
    addr: String,
}

/// Parses the body of `POST /cluster/members`: the member to add.
pub fn member(body: &[u8]) -> Result<ClusterOp, String> {
    let b: MemberBody = parse(body)?;
    let valid = b.addr.len() <= MAX_ADDR_BYTES
        && b.addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        return Err(format!(
            "addr must be the member's consensus address, HOST:PORT (at most {MAX_ADDR_BYTES} bytes)"
        ));
    }
    Ok(ClusterOp::AddMember { id: b.id, addr: b.addr })
}

/// Longest member address: a DNS name (253) and a port.
const MAX_ADDR_BYTES: usize = 253 + 6;

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// `body` read by `flat` (see [`flat`]) if it can be, else by serde_json.
fn read<'a, T: Deserialize<'a>>(body: &'a [u8], flat: fn(&'a str) -> Option<T>) -> Result<T, String> {
    match ringlock_client::frame::utf8(body).and_then(flat) {
        Some(b) => Ok(b),
        None => parse(body),
    }
}

// What serde_json makes of a plain value, for a field of each kind; `None` where it would
// refuse it (then it does, in its words).

fn text(v: Value<'_>) -> Option<Cow<'_, str>> {
    match v {
        Value::Str(s) => Some(Cow::Borrowed(s)),
        _ => None,
    }
}

fn seconds(v: Value<'_>) -> Option<Option<f64>> {
    match v {
        // As serde_json reads an integer into an `f64`; exact, for it has at most 15 digits.
        Value::Int(n) => Some(Some(n as f64)),
        Value::Null => Some(None),
        _ => None,
    }
}

fn token_of(v: Value<'_>) -> Option<Option<u64>> {
    match v {
        Value::Int(n) => Some(Some(n)),
        Value::Str(s) => s.parse().ok().map(Some),
        Value::Null => Some(None),
        Value::Bool(_) => None,
    }
}

fn flag(v: Value<'_>) -> Option<Option<bool>> {
    match v {
        Value::Bool(b) => Some(Some(b)),
        Value::Null => Some(None),
        _ => None,
    }
}

fn name(v: Value<'_>) -> Option<Option<Name<'_>>> {
    match v {
        Value::Null => Some(None),
        v => text(v).map(|s| Some(Name(s))),
    }
}

/// Fills a field met for the first time (serde_json refuses a field given twice).
fn once<T>(field: &mut Option<T>, value: Option<T>) -> Option<()> {
    field.replace(value?).is_none().then_some(())
}

impl<'a> AcquireBody<'a> {
    fn flat(body: &'a str) -> Option<Self> {
        let (mut resource, mut owner, mut expire, mut wait) = (None, None, None, None);
        flat::members(body, |key, v| match key {
            "resource" => once(&mut resource, text(v)),
            "owner" => once(&mut owner, text(v)),
            "expire" => once(&mut expire, seconds(v)),
            "wait" => once(&mut wait, seconds(v)),
            _ => Some(()),
        })?;
        Some(Self { resource: resource?, owner: owner?, expire: expire.flatten(), wait: wait.flatten() })
    }
}

impl<'a> AnyReleaseBody<'a> {
    fn flat(body: &'a str) -> Option<Self> {
        let (mut resource, mut owner, mut token, mut force) = (None, None, None, None);
        flat::members(body, |key, v| match key {
            "resource" => once(&mut resource, text(v)),
            "owner" => once(&mut owner, name(v)),
            "token" => once(&mut token, token_of(v)),
            "force" => once(&mut force, flag(v)),
            _ => Some(()),
        })?;
        Some(Self {
            resource: resource?,
            owner: owner.flatten(),
            token: token.flatten(),
            force: force.flatten(),
        })
    }
}

impl<'a> ExtendBody<'a> {
    fn flat(body: &'a str) -> Option<Self> {
        let (mut resource, mut owner, mut expire, mut token) = (None, None, None, None);
        flat::members(body, |key, v| match key {
            "resource" => once(&mut resource, text(v)),
            "owner" => once(&mut owner, text(v)),
            "expire" => once(&mut expire, seconds(v)),
            "token" => once(&mut token, token_of(v)),
            _ => Some(()),
        })?;
        Some(Self { resource: resource?, owner: owner?, expire: expire.flatten(), token: token.flatten() })
    }
}

/// Seconds (possibly fractional) to whole milliseconds, rounded up so that a lease or wait is
/// never shorter than asked; values that are whole milliseconds up to float error stay exact.
fn millis(secs: f64, field: &str, max_ms: u64) -> Result<u64, String> {
    if secs.is_nan() || secs < 0.0 {
        return Err(format!("{field} must be a number of seconds >= 0"));
    }
    let ms = secs * 1000.0;
    let nearest = ms.round();
    let ms = if (ms - nearest).abs() < 1e-6 { nearest } else { ms.ceil() };
    if ms > max_ms as f64 {
        return Err(format!("{field} must be at most {} seconds", max_ms / 1000));
    }
    Ok(ms as u64)
}

/// A token as a JSON number or a decimal string.
fn token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Token {
        Number(u64),
        Text(String),
    }
    match Option::<Token>::deserialize(d)? {
        None => Ok(None),
        Some(Token::Number(n)) => Ok(Some(n)),
        Some(Token::Text(s)) => {
            s.parse().map(Some).map_err(|_| serde::de::Error::custom("token must be a u64"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acq(body: &str) -> Result<BodyRequest<'_>, String> {
        acquire(body.as_bytes())
    }

    fn parts(r: BodyRequest<'_>) -> (String, String, Option<u64>, u64) {
        match r {
            Request::Acquire { resource, owner, ttl, wait, .. } => (resource.into(), owner.into(), ttl, wait),
            other => panic!("{other:?}"),
        }
    }

    /// Bodies made of these pieces: plain ones the flat reader takes, and every way one can
    /// fail to be plain or be refused.
    fn bodies() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec!["resource", "owner", "expire", "wait", "token", "force", "x"]);
        let value = prop::sample::select(vec![
            r#""r""#,
            r#""café""#,
            r#""a\"b""#,
            r#""""#,
            r#""12""#,
            r#""\u0041""#,
            "0",
            "7",
            "01",
            "1.5",
            "1e3",
            "-1",
            "999999999999999",
            "1000000000000000",
            "true",
            "false",
            "null",
            "[1]",
            "{}",
        ]);
        let space = prop::sample::select(vec!["", " ", "\n\t"]);
        let member = (space.clone(), key, space.clone(), value);
        // Most bodies name the lock first, so that many are plain and complete.
        let start = prop::sample::select(vec![r#""resource":"r","owner":"o","#, r#""resource":"r","#, ""]);
        let end = prop::sample::select(vec!["}", "}", "}", "}", "}", "} ", "", ",}", "}x"]);
        (start, prop::collection::vec(member, 0..3), end).prop_map(|(start, members, end)| {
            let members: Vec<_> = members.iter().map(|(a, k, b, v)| format!("{a}\"{k}\"{b}:{v}")).collect();
            format!("{{{start}{}{end}", members.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4096))]

        /// Whatever the flat reader reads, serde_json reads the same; so an answer never
        /// depends on which of them read the body.
        #[test]
        fn the_flat_reader_reads_what_serde_json_reads(body in bodies()) {
            if let Some(b) = AcquireBody::flat(&body) {
                proptest::prop_assert_eq!(Ok(b), parse::<AcquireBody<'_>>(body.as_bytes()));
            }
            if let Some(b) = AnyReleaseBody::flat(&body) {
                proptest::prop_assert_eq!(Ok(b), parse::<AnyReleaseBody<'_>>(body.as_bytes()));
            }
            if let Some(b) = ExtendBody::flat(&body) {
                proptest::prop_assert_eq!(Ok(b), parse::<ExtendBody<'_>>(body.as_bytes()));
            }
        }
    }

    #[test]
    fn the_sdks_bodies_are_read_by_the_flat_reader() {
        // As serde_json (the Rust client), JSON.stringify (Node) and json.dumps (Python) write them.
        assert!(AcquireBody::flat(r#"{"resource":"r","owner":"o","expire":30}"#).is_some());
        assert!(AcquireBody::flat(r#"{"resource": "r", "owner": "o", "expire": null}"#).is_some());
        assert!(AnyReleaseBody::flat(r#"{"resource": "r", "owner": "o"}"#).is_some());
        assert!(AnyReleaseBody::flat(r#"{"resource":"r","force":true,"token":"42"}"#).is_some());
        assert!(ExtendBody::flat(r#"{"resource":"r","owner":"o","expire":5,"token":3}"#).is_some());
        // And what it leaves to serde_json.
        assert!(AcquireBody::flat(r#"{"resource":"r","owner":"o","expire":1.5}"#).is_none());
        assert!(AcquireBody::flat(r#"{"resource":"r","owner":"o","owner":"p"}"#).is_none());
        assert!(AcquireBody::flat(r#"{"resource":"r"}"#).is_none());
    }

    #[test]
    fn legacy_bodies() {
        assert_eq!(parts(acq(r#"{"resource":"r","owner":"o"}"#).unwrap()), ("r".into(), "o".into(), None, 0));
        assert_eq!(parts(acq(r#"{"resource":"r","owner":"o","expire":null}"#).unwrap()).2, None);
        assert_eq!(parts(acq(r#"{"resource":"r","owner":"o","expire":2}"#).unwrap()).2, Some(2000));
        assert_eq!(parts(acq(r#"{"owner":"o","resource":"r","unknown":[1]}"#).unwrap()).0, "r");
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let body = r#"{"resource":"plain","owner":"caf\u00e9"}"#;
        match acq(body).unwrap() {
            Request::Acquire { resource, owner, .. } => {
                assert!(matches!(resource, Cow::Borrowed("plain")));
                assert!(matches!(owner, Cow::Owned(ref o) if o == "café"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fractional_seconds_round_up_to_whole_milliseconds() {
        let ttl = |e: &str| parts(acq(&format!(r#"{{"resource":"r","owner":"o","expire":{e}}}"#)).unwrap()).2;
        assert_eq!(ttl("1.1"), Some(1100));
        assert_eq!(ttl("0.001"), Some(1));
        assert_eq!(ttl("0.0001"), Some(1));
        assert_eq!(ttl("0"), Some(0));
        assert_eq!(ttl("2.5e-3"), Some(3));
        let wait = parts(acq(r#"{"resource":"r","owner":"o","wait":0.25}"#).unwrap()).3;
        assert_eq!(wait, 250);
    }

    #[test]
    fn one_line_reasons_for_bad_bodies() {
        let err = |b: &str| acq(b).unwrap_err();
        assert_eq!(err(r#"{"resource":"r"}"#), "missing field `owner` at line 1 column 16");
        assert_eq!(
            err(r#"{"resource":1,"owner":"o"}"#),
            "invalid type: integer `1`, expected a string at line 1 column 13"
        );
        assert_eq!(
            err(r#"{"resource":"r","owner":"o","expire":-1}"#),
            "expire must be a number of seconds >= 0"
        );
        assert_eq!(
            err(r#"{"resource":"r","owner":"o","expire":"5"}"#),
            "invalid type: string \"5\", expected f64 at line 1 column 40"
        );
        assert_eq!(
            err(r#"{"resource":"r","owner":"o","expire":1e12}"#),
            "expire must be at most 31536000 seconds"
        );
        assert_eq!(err(r#"{"resource":"r","owner":"o","wait":86401}"#), "wait must be at most 86400 seconds");
        assert_eq!(
            err("{\"resource\":\"r\",\"owner\":\"o\""),
            "EOF while parsing an object at line 1 column 27"
        );
        assert_eq!(err("not json"), "expected ident at line 1 column 2");
        assert!(
            acquire(b"{\"resource\":\"\xff\",\"owner\":\"o\"}")
                .unwrap_err()
                .starts_with("invalid unicode code point")
        );
        assert_eq!(extend(br#"{"resource":"r","owner":"o"}"#).unwrap_err(), "missing field `expire`");
    }

    #[test]
    fn another_endpoints_fields_are_ignored() {
        assert!(release(br#"{"resource":"r","owner":"o","wait":[1],"expire":"x"}"#).is_ok());
        assert!(extend(br#"{"resource":"r","owner":"o","expire":1,"wait":{}}"#).is_ok());
        assert!(acq(r#"{"resource":"r","owner":"o","token":[]}"#).is_ok());
        assert!(
            release(br#"{"resource":"r","owner":"o","token":[]}"#).is_err(),
            "its own fields are checked"
        );
    }

    /// A release body as the reference server reads it, and as this server did before `force`
    /// (serde's messages name the type).
    #[derive(Deserialize)]
    struct ReleaseBody<'a> {
        #[serde(borrow)]
        resource: Cow<'a, str>,
        #[serde(borrow)]
        owner: Cow<'a, str>,
        #[serde(default, deserialize_with = "token")]
        token: Option<u64>,
    }

    #[test]
    fn a_release_without_force_is_read_and_refused_exactly_as_before() {
        for body in [
            r#"{"resource":"r","owner":"o"}"#,
            r#"{"owner":"o","resource":"r","token":"7","wait":[1]}"#,
            r#"{"resource":"r","owner":"o","force":false}"#,
            r#"{"resource":"r","owner":"o","force":null}"#,
            r#"{"resource":"r\u00e9","owner":"o\n"}"#,
            r#"{"resource":"r"}"#,
            r#"{"resource":"r","force":false}"#,
            r#"{"owner":"o"}"#,
            r#"{}"#,
            r#"{"resource":"r","owner":null}"#,
            r#"{"resource":"r","owner":5}"#,
            r#"{"resource":"r","owner":"o","owner":"p"}"#,
            r#"{"resource":"r","token":-1}"#,
            r#"{"resource":"r","token":"x","owner":"o"}"#,
            r#"{"resource":"r","owner":"o""#,
            "[]",
            r#"["r","o",7]"#,
            r#"["r"]"#,
            "not json",
            "",
        ] {
            let before = parse::<ReleaseBody<'_>>(body.as_bytes()).map(|b| Request::Release {
                resource: b.resource,
                owner: b.owner,
                token: b.token,
            });
            assert_eq!(release(body.as_bytes()), before, "{body}");
        }
    }

    #[test]
    fn a_forced_release_names_no_owner() {
        assert_eq!(
            release(br#"{"resource":"r","force":true}"#),
            Ok(Request::ForceRelease { resource: "r".into(), token: None })
        );
        assert_eq!(
            release(br#"{"force":true,"resource":"r","token":"12"}"#),
            Ok(Request::ForceRelease { resource: "r".into(), token: Some(12) })
        );
        assert_eq!(release(br#"{"resource":"r","owner":"o","force":true}"#), Err(FORCE_WITH_OWNER.into()));
        assert_eq!(release(br#"{"resource":"r","owner":"","force":true}"#), Err(FORCE_WITH_OWNER.into()));
        assert_eq!(
            release(br#"{"resource":"r","force":"yes"}"#),
            Err("invalid type: string \"yes\", expected a boolean at line 1 column 29".into())
        );
        assert_eq!(release(br#"{"force":true}"#), Err("missing field `resource` at line 1 column 14".into()));
    }

    #[test]
    fn release_names_without_escapes_are_borrowed() {
        match release(br#"{"resource":"plain","owner":"caf\u00e9"}"#).unwrap() {
            Request::Release { resource, owner, .. } => {
                assert!(matches!(resource, Cow::Borrowed("plain")));
                assert!(matches!(owner, Cow::Owned(ref o) if o == "café"));
            }
            other => panic!("{other:?}"),
        }
        match release(br#"{"resource":"r","owner":"worker-1"}"#).unwrap() {
            Request::Release { owner, .. } => assert!(matches!(owner, Cow::Borrowed("worker-1"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens_as_numbers_or_strings() {
        let tok = |b: &str| match release(b.as_bytes()).unwrap() {
            Request::Release { token, .. } => token,
            other => panic!("{other:?}"),
        };
        assert_eq!(tok(r#"{"resource":"r","owner":"o"}"#), None);
        assert_eq!(tok(r#"{"resource":"r","owner":"o","token":18446744073709551615}"#), Some(u64::MAX));
        assert_eq!(
            tok(r#"{"resource":"r","owner":"o","token":"1763822700000000001"}"#),
            Some(1763822700000000001)
        );
        assert!(release(br#"{"resource":"r","owner":"o","token":"x"}"#).is_err());
        assert!(release(br#"{"resource":"r","owner":"o","token":-1}"#).is_err());
    }
}
