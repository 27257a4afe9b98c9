//! Which endpoint a request is for, and whether it may go on: path, method, secret, then body,
//! in that order, so that nothing of an unauthenticated request is parsed beyond its head.
//! Pure: the secret check comes in as a closure. Routing answers in its own terms (an
//! [`Endpoint`] and a request, or a [`Refusal`]); how either reads as HTTP is
//! [`super::endpoint`]'s business.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::api::{self, ClusterOp, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, Request};
use crate::config::Limits;

use super::body::{self, BodyRequest};
use super::head::Method;

/// The lock endpoints; each reads a [`crate::api::Reply`] its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Acquire,
    Release,
    /// `POST /release` with `"force": true`: whoever holds it.
    ForceRelease,
    Extend,
    Inspect,
    List,
    Metrics,
    /// `/cluster` and its members.
    Cluster,
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
pub enum Routed<'b> {
    /// `/health`: answered at once, no lock is touched.
    Health,
    /// Refused before any lock is touched.
    Refused(Refusal),
    /// A request for the lock engine.
    Lock(Endpoint, BodyRequest<'b>),
    /// An operator's request about the cluster.
    Cluster(ClusterOp),
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such path.
    NotFound,
    /// The path does not take this method; these do.
    MethodNotAllowed { allow: &'static str },
    /// The secret is missing or wrong.
    Unauthorized,
    /// The request's fields are malformed or out of bounds; the reason says which.
    BadRequest(String),
}

/// What a path names, before its method, secret and body are checked.
enum Resource<'b> {
    Health,
    Metrics,
    Lock(Endpoint),
    /// `/locks/{name}`, still percent-encoded.
    Named(&'b str),
    Cluster,
    Members,
    /// `/cluster/members/{id}`, not yet parsed.
    Member(&'b str),
}

/// Checks path, method and secret: the refusal, if the request is refused before its body
/// matters. Used on its own to answer `Expect: 100-continue` before the body is sent.
pub fn preflight(method: Method, target: &str, authorized: impl FnOnce() -> bool) -> Option<Refusal> {
    resolve(method, target, authorized).err()
}

/// Routes a complete request; names and times are checked against `limits`.
pub fn route<'b>(
    method: Method,
    target: &'b str,
    body: &'b [u8],
    limits: &Limits,
    authorized: impl FnOnce() -> bool,
) -> Routed<'b> {
    let resource = match resolve(method, target, authorized) {
        Ok(r) => r,
        Err(refusal) => return Routed::Refused(refusal),
    };
    let parsed = match resource {
        Resource::Health => return Routed::Health,
        Resource::Metrics => return Routed::Lock(Endpoint::Metrics, Request::Stats),
        Resource::Lock(Endpoint::Acquire) => body::acquire(body).map(|r| (Endpoint::Acquire, r)),
        Resource::Lock(Endpoint::Release) => body::release(body).map(|r| match r {
            Request::ForceRelease { .. } => (Endpoint::ForceRelease, r),
            _ => (Endpoint::Release, r),
        }),
        Resource::Lock(Endpoint::Extend) => body::extend(body).map(|r| (Endpoint::Extend, r)),
        Resource::Lock(_) => list(query_of(target)).map(|r| (Endpoint::List, r)),
        Resource::Named(name) => inspect(name).map(|r| (Endpoint::Inspect, r)),
        Resource::Cluster => return Routed::Cluster(ClusterOp::Status),
        Resource::Members => {
            return match body::member(body) {
                Ok(op) => Routed::Cluster(op),
                Err(reason) => Routed::Refused(Refusal::BadRequest(reason)),
            };
        }
        Resource::Member(id) => {
            return match id.parse() {
                Ok(id) => Routed::Cluster(ClusterOp::RemoveMember { id }),
                Err(_) => Routed::Refused(Refusal::BadRequest("a member's id is a whole number".into())),
            };
        }
    };
    match parsed.and_then(|(endpoint, req)| api::check(&req, limits).map(|()| (endpoint, req))) {
        Ok((endpoint, req)) => Routed::Lock(endpoint, req),
        Err(reason) => Routed::Refused(Refusal::BadRequest(reason)),
    }
}

fn resolve(method: Method, target: &str, authorized: impl FnOnce() -> bool) -> Result<Resource<'_>, Refusal> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let (resource, allow) = match path {
        "/health" => (Resource::Health, "GET, HEAD"),
        "/metrics" => (Resource::Metrics, "GET, HEAD"),
        "/acquire" => (Resource::Lock(Endpoint::Acquire), "POST"),
        "/release" => (Resource::Lock(Endpoint::Release), "POST"),
        "/extend" => (Resource::Lock(Endpoint::Extend), "POST"),
        "/locks" | "/locks/" => (Resource::Lock(Endpoint::List), "GET, HEAD"),
        "/cluster" => (Resource::Cluster, "GET, HEAD"),
        "/cluster/members" => (Resource::Members, "POST"),
        _ => match (path.strip_prefix("/locks/"), path.strip_prefix("/cluster/members/")) {
            (Some(name), _) => (Resource::Named(name), "GET, HEAD"),
            (_, Some(id)) => (Resource::Member(id), "DELETE"),
            _ => return Err(Refusal::NotFound),
        },
    };
    let method_ok = match allow {
        "POST" => method == Method::Post,
        "DELETE" => method == Method::Delete,
        _ => matches!(method, Method::Get | Method::Head),
    };
    if !method_ok {
        return Err(Refusal::MethodNotAllowed { allow });
    }
    // Health and metrics need no secret: probes and scrapers have none, and neither says
    // anything about a lock's name, owner or token.
    if !matches!(resource, Resource::Health | Resource::Metrics) && !authorized() {
        return Err(Refusal::Unauthorized);
    }
    Ok(resource)
}

fn query_of(target: &str) -> &str {
    target.split_once('?').map_or("", |(_, q)| q)
}

fn inspect(encoded: &str) -> Result<BodyRequest<'_>, String> {
    let name = percent_decode_str(encoded).decode_utf8().map_err(|_| "resource is not UTF-8".to_string())?;
    Ok(Request::Inspect { resource: name })
}

fn list(query: &str) -> Result<BodyRequest<'_>, String> {
    let mut prefix = Cow::Borrowed("");
    let mut after = None;
    let mut limit = DEFAULT_LIST_LIMIT;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "prefix" => prefix = value,
            "after" => after = Some(value),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|&n| n <= MAX_LIST_LIMIT)
                    .ok_or_else(|| format!("limit must be a whole number from 0 to {MAX_LIST_LIMIT}"))?;
            }
            _ => {}
        }
    }
    Ok(Request::List { prefix, after, limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::endpoint;
    use crate::proto::http::response::{Body, Status};

    fn status(r: Routed<'_>) -> (u16, String) {
        let resp = match r {
            Routed::Health => endpoint::health(),
            Routed::Refused(refusal) => endpoint::refused(refusal),
            Routed::Lock(e, _) => return (0, format!("{e:?}")),
            Routed::Cluster(op) => return (0, format!("{op:?}")),
        };
        let body = match resp.body {
            Body::Text(t) => t.to_string(),
            Body::Owned(t) | Body::Metrics(t) => t,
            Body::Json(j) => String::from_utf8(j).unwrap(),
        };
        (resp.status.code(), body)
    }

    /// How a request of `method` on `target` with `body` is routed, with default limits.
    fn routed(method: Method, target: &str, body: &[u8], authorized: bool) -> (u16, String) {
        status(route(method, target, body, &Limits::default(), || authorized))
    }

    const BODY: &[u8] = br#"{"resource":"r","owner":"o"}"#;

    #[test]
    fn the_secret_is_checked_before_the_body_is_read() {
        let mut asked = false;
        let r = route(Method::Post, "/acquire", b"not json at all", &Limits::default(), || {
            asked = true;
            false
        });
        assert!(asked);
        assert_eq!(status(r), (401, "Missing or invalid secret".into()));
        assert_eq!(routed(Method::Post, "/acquire", b"{", true).0, 400);
    }

    #[test]
    fn endpoints_methods_and_paths() {
        assert_eq!(routed(Method::Post, "/acquire", BODY, true), (0, "Acquire".into()));
        assert_eq!(routed(Method::Post, "/release", BODY, true), (0, "Release".into()));
        assert_eq!(
            routed(Method::Post, "/release", br#"{"resource":"r","force":true}"#, true),
            (0, "ForceRelease".into())
        );
        assert_eq!(
            routed(Method::Post, "/release", br#"{"resource":"r","force":true}"#, false),
            (401, "Missing or invalid secret".into()),
            "a forced release needs the secret"
        );
        assert_eq!(routed(Method::Get, "/health", b"", false), (200, "OK".into()), "no secret needed");
        assert_eq!(routed(Method::Head, "/health?probe=1", b"", false).0, 200);
        assert_eq!(routed(Method::Post, "/nope", BODY, true), (404, "Not Found".into()));
        assert_eq!(routed(Method::Post, "", BODY, true).0, 404);
        let r = route(Method::Get, "/acquire", b"", &Limits::default(), || true);
        assert!(
            matches!(&r, Routed::Refused(refusal) if endpoint::refused(refusal.clone()).allow == Some("POST"))
        );
        assert_eq!(status(r).0, 405);
        assert_eq!(routed(Method::Post, "/health", b"", true).0, 405);
        assert_eq!(routed(Method::Other, "/locks", b"", true).0, 405);
    }

    #[test]
    fn inspect_decodes_the_name() {
        match route(Method::Get, "/locks/s3%3A%2F%2Fb/k%20ey", b"", &Limits::default(), || true) {
            Routed::Lock(Endpoint::Inspect, Request::Inspect { resource }) => {
                assert_eq!(resource, "s3://b/k ey")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            routed(Method::Get, "/locks/%ff", b"", true),
            (400, "ERR Bad request: resource is not UTF-8".into())
        );
        assert_eq!(routed(Method::Get, "/locks/a%00", b"", true).0, 400);
        assert_eq!(routed(Method::Get, "/locks/x", b"", false).0, 401);
    }

    #[test]
    fn list_query() {
        match route(
            Method::Get,
            "/locks?prefix=job%2F&after=job%2F3&limit=2&x=y",
            b"",
            &Limits::default(),
            || true,
        ) {
            Routed::Lock(Endpoint::List, Request::List { prefix, after, limit }) => {
                assert_eq!((prefix.as_ref(), after.as_deref(), limit), ("job/", Some("job/3"), 2));
            }
            other => panic!("{other:?}"),
        }
        match route(Method::Get, "/locks", b"", &Limits::default(), || true) {
            Routed::Lock(Endpoint::List, Request::List { prefix, after, limit }) => {
                assert_eq!((prefix.as_ref(), after, limit), ("", None, DEFAULT_LIST_LIMIT));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(routed(Method::Get, "/locks?limit=1001", b"", true).0, 400);
        assert_eq!(routed(Method::Get, "/locks?limit=-1", b"", true).0, 400);
    }

    #[test]
    fn preflight_refuses_without_a_body() {
        assert_eq!(
            preflight(Method::Post, "/acquire", || false).map(|r| endpoint::refused(r).status),
            Some(Status::Unauthorized)
        );
        assert_eq!(preflight(Method::Post, "/acquire", || true), None);
        assert_eq!(
            preflight(Method::Post, "/zzz", || true).map(|r| endpoint::refused(r).status),
            Some(Status::NotFound)
        );
    }

    #[test]
    fn cluster_paths() {
        let r = |m, t, b: &[u8]| routed(m, t, b, true);
        assert_eq!(r(Method::Get, "/cluster", b""), (0, "Status".into()));
        assert_eq!(
            r(Method::Post, "/cluster/members", br#"{"id":4,"addr":"10.0.0.4:7001"}"#),
            (0, r#"AddMember { id: 4, addr: "10.0.0.4:7001" }"#.into())
        );
        assert_eq!(r(Method::Delete, "/cluster/members/4", b""), (0, "RemoveMember { id: 4 }".into()));
        assert_eq!(
            r(Method::Delete, "/cluster/members/four", b""),
            (400, "ERR Bad request: a member's id is a whole number".into())
        );
        assert_eq!(
            r(Method::Post, "/cluster/members", br#"{"id":4,"addr":"nowhere"}"#),
            (
                400,
                "ERR Bad request: addr must be the member's consensus address, HOST:PORT (at most 259 bytes)"
                    .into()
            )
        );
        assert_eq!(r(Method::Post, "/cluster", b"").0, 405);
        assert_eq!(r(Method::Get, "/cluster/members/4", b"").0, 405);
        let unauthorized = routed(Method::Get, "/cluster", b"", false);
        assert_eq!(unauthorized.0, 401, "the cluster's addresses are for operators only");
    }
}
