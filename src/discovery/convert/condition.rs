//! Route and response-class conditions: protobuf match trees -> the domain
//! `RequestMatch`/`ResponseMatch` of `profile.rs`. Part of `discovery::convert`
//! (which owns the rest of a profile and the error type); runs on the same
//! `profile:<name:port>` discovery threads. Pure.
//!
//! A condition converts as a whole or not at all: the first leaf that fails (a
//! regex that does not compile, an unknown match kind, a bad method, a status
//! range with a bound missing or out of range) fails the whole tree, and the
//! caller drops the route or the response class it belongs to. linkerd2-proxy
//! filters a bad leaf out of its `all`/`any` instead, so `{all: [bad regex]}`
//! becomes `all: []`, which matches every request, and `not {all: [bad]}`
//! matches none; spoke never reinterprets a condition. Trees are depth-checked
//! iteratively first, so the recursive conversion (and later matching) is
//! bounded by [`MAX_MATCH_DEPTH`].

use super::{excerpt, ConvertError, MAX_MATCH_DEPTH};
use crate::profile::{Method, PathPatterns, RequestMatch, ResponseClass, ResponseMatch};
use crate::proto::destination as pb;
use crate::proto::http_types::http_method;

/// A route's condition, depth-checked and converted.
pub(super) fn request_condition(
    cond: &pb::RequestMatch,
    patterns: &PathPatterns,
) -> Result<RequestMatch, ConvertError> {
    if too_deep(cond, request_children) {
        return Err(ConvertError::TooDeep);
    }
    request_match(cond, patterns)
}

/// Children of a match node, for the iterative depth check.
fn request_children(m: &pb::RequestMatch) -> &[pb::RequestMatch] {
    use pb::request_match::Match;
    match &m.match_ {
        Some(Match::All(seq)) | Some(Match::Any(seq)) => &seq.matches,
        Some(Match::Not(inner)) => std::slice::from_ref(&**inner),
        _ => &[],
    }
}

fn response_children(m: &pb::ResponseMatch) -> &[pb::ResponseMatch] {
    use pb::response_match::Match;
    match &m.match_ {
        Some(Match::All(seq)) | Some(Match::Any(seq)) => &seq.matches,
        Some(Match::Not(inner)) => std::slice::from_ref(&**inner),
        _ => &[],
    }
}

/// Whether any chain from `root` down has more than [`MAX_MATCH_DEPTH`] nodes.
/// Walks with an explicit stack and stops descending past the limit, so it
/// neither recurses nor visits anything deeper than the limit.
fn too_deep<'a, T>(root: &'a T, children: fn(&'a T) -> &'a [T]) -> bool {
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_MATCH_DEPTH {
            return true;
        }
        stack.extend(children(node).iter().map(|k| (k, depth + 1)));
    }
    false
}

/// Converts a depth-checked request match, all of it or nothing: the first
/// sub-match that fails fails the whole condition. Dropping just the bad
/// sub-match (as linkerd2-proxy does) would widen an `all` and could turn a
/// `not` into its opposite.
fn request_match(
    pb: &pb::RequestMatch,
    patterns: &PathPatterns,
) -> Result<RequestMatch, ConvertError> {
    use pb::request_match::Match;
    let seq = |ms: &[pb::RequestMatch]| -> Result<Vec<RequestMatch>, ConvertError> {
        ms.iter().map(|m| request_match(m, patterns)).collect()
    };
    match &pb.match_ {
        Some(Match::All(s)) => Ok(RequestMatch::All(seq(&s.matches)?)),
        Some(Match::Any(s)) => Ok(RequestMatch::Any(seq(&s.matches)?)),
        Some(Match::Not(inner)) => Ok(RequestMatch::Not(Box::new(request_match(inner, patterns)?))),
        Some(Match::Path(p)) => {
            RequestMatch::shared_path(&p.regex, patterns).map_err(|e| ConvertError::InvalidRegex {
                pattern: excerpt(p.regex.trim()),
                reason: regex_reason(&e),
            })
        }
        Some(Match::Method(m)) => method(m).map(RequestMatch::Method),
        _ => Err(ConvertError::EmptyMatch),
    }
}

/// One line of reason from a regex error (syntax errors span several lines
/// and repeat the pattern). Also used by the embedded controller, so a file it
/// refuses says what the proxy would have said.
pub fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiled regex exceeds {limit} bytes (large counted repetitions and Unicode classes such as \\p{{L}} cost the most)")
        }
        other => match other
            .to_string()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
        {
            Some(last) => excerpt(last.trim().trim_start_matches("error: ")),
            None => String::new(),
        },
    }
}

fn method(pb: &crate::proto::http_types::HttpMethod) -> Result<Method, ConvertError> {
    use http_method::Registered;
    match &pb.type_ {
        Some(http_method::Type::Registered(r)) => match r.enum_value() {
            Ok(Registered::GET) => Ok(Method::Get),
            Ok(Registered::POST) => Ok(Method::Post),
            Ok(Registered::PUT) => Ok(Method::Put),
            Ok(Registered::DELETE) => Ok(Method::Delete),
            Ok(Registered::PATCH) => Ok(Method::Patch),
            Ok(Registered::OPTIONS) => Ok(Method::Options),
            Ok(Registered::CONNECT) => Ok(Method::Connect),
            Ok(Registered::HEAD) => Ok(Method::Head),
            Ok(Registered::TRACE) => Ok(Method::Trace),
            Err(n) => Err(ConvertError::InvalidMethod(format!("registered #{n}"))),
        },
        Some(http_method::Type::Unregistered(s)) => {
            Method::from_token(s).ok_or_else(|| ConvertError::InvalidMethod(excerpt(s)))
        }
        _ => Err(ConvertError::InvalidMethod(String::new())),
    }
}

pub(super) fn response_class(pb: &pb::ResponseClass) -> Result<ResponseClass, ConvertError> {
    let cond = pb
        .condition
        .as_ref()
        .ok_or(ConvertError::MissingCondition)?;
    if too_deep(cond, response_children) {
        return Err(ConvertError::TooDeep);
    }
    Ok(ResponseClass {
        condition: response_match(cond)?,
        is_failure: pb.is_failure,
    })
}

/// Converts a depth-checked response match, all of it or nothing, like
/// [`request_match`].
fn response_match(pb: &pb::ResponseMatch) -> Result<ResponseMatch, ConvertError> {
    use pb::response_match::Match;
    let seq = |ms: &[pb::ResponseMatch]| -> Result<Vec<ResponseMatch>, ConvertError> {
        ms.iter().map(response_match).collect()
    };
    match &pb.match_ {
        Some(Match::All(s)) => Ok(ResponseMatch::All(seq(&s.matches)?)),
        Some(Match::Any(s)) => Ok(ResponseMatch::Any(seq(&s.matches)?)),
        Some(Match::Not(inner)) => Ok(ResponseMatch::Not(Box::new(response_match(inner)?))),
        Some(Match::Status(range)) => status_range(range.min, range.max),
        _ => Err(ConvertError::EmptyMatch),
    }
}

/// Both bounds are required. Linkerd's controller sends a bound the
/// ServiceProfile leaves out as 0, and linkerd2-proxy then cannot build the
/// range (0 is not a status code) and drops the condition; reading `{min: 500}`
/// as "500 only" would make one file mean different things to different
/// proxies, so here too the range fails and its class is dropped.
fn status_range(min: u32, max: u32) -> Result<ResponseMatch, ConvertError> {
    let code = |n: u32| u16::try_from(n).ok().filter(|c| (100..=999).contains(c));
    match (code(min), code(max)) {
        (Some(min), Some(max)) if min <= max => Ok(ResponseMatch::Status { min, max }),
        _ => Err(ConvertError::InvalidStatusRange { min, max }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::request_match::Match as Rm;
    use protobuf::MessageField;

    // Messages are written in protobuf text format, as in the parent's tests.
    use super::super::profile;
    use super::super::tests::{conv, route};

    /// The condition of a one-route profile; `None` if the route was dropped.
    #[track_caller]
    fn cond(text: &str) -> Option<RequestMatch> {
        let p = conv(&format!("routes {{ condition {{ {text} }} }}"));
        p.routes.first().map(|r| r.condition.clone())
    }

    fn path(re: &str) -> Option<RequestMatch> {
        cond(&format!("path {{ regex: {re:?} }}"))
    }

    /// `levels` nested `not`s around a path match.
    fn nots(levels: usize) -> String {
        format!(
            r#"{}path {{ regex: "/a" }}{}"#,
            "not { ".repeat(levels),
            " }".repeat(levels)
        )
    }

    #[test]
    fn path_becomes_an_anchored_regex() {
        match path(" ^/books$ ") {
            Some(RequestMatch::Path(re)) => assert_eq!(re.as_str(), "^(?:/books)$"),
            other => panic!("{other:?}"),
        }
        let m = path("/books").expect("kept");
        assert!(m.matches("GET", "/books") && !m.matches("GET", "/books/1"));
        // Unbalanced and oversized patterns are dropped (rules in `profile`).
        assert!(path("/a)|(/b").is_none());
        assert!(path(r"(?:\p{L}{100}){100}").is_none());
    }

    #[test]
    fn invalid_regex_drops_only_that_route() {
        let p = conv(
            r#"routes { condition { path { regex: "/ok" } } }
               routes { condition { path { regex: "/books/(" } } }
               routes { condition { path { regex: "/also-ok" } }
                        metrics_labels { key: "route" value: "third" } }"#,
        );
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.route_for("GET", "/also-ok"), Some(1));
        assert_eq!(p.routes[1].labels[0], ("route".into(), "third".into()));
    }

    #[test]
    fn methods() {
        let m = |text: &str| match cond(&format!("method {{ {text} }}")) {
            Some(RequestMatch::Method(m)) => Some(m),
            other => other.map(|o| panic!("{o:?}")),
        };
        assert_eq!(m("registered: GET"), Some(Method::Get));
        assert_eq!(m("registered: TRACE"), Some(Method::Trace));
        assert_eq!(m(r#"unregistered: "POST""#), Some(Method::Post));
        let purge = Some(Method::Extension("PURGE".into()));
        assert_eq!(m(r#"unregistered: "PURGE""#), purge);
        for bad in [r#"unregistered: """#, r#"unregistered: "BAD METHOD""#, ""] {
            assert_eq!(m(bad), None, "{bad}");
        }
        // An enum value this build does not know (sent by a newer controller).
        let mut unknown = crate::proto::http_types::HttpMethod::new();
        let value = protobuf::EnumOrUnknown::from_i32(99);
        unknown.type_ = Some(http_method::Type::Registered(value));
        assert!(method(&unknown).is_err());
    }

    #[test]
    fn missing_or_empty_condition_drops_route() {
        assert!(conv("routes { is_retryable: true }").routes.is_empty());
        assert!(cond("").is_none());
        assert!(cond("not {}").is_none());
    }

    /// Request leaves that do not convert, one of each kind: a regex that does
    /// not parse, one that compiles too big, an empty match, a malformed
    /// method token, a method with no type.
    const BAD_REQUEST_LEAVES: [&str; 5] = [
        r#"path { regex: "(" }"#,
        r#"path { regex: "(?:\\p{L}{100}){100}" }"#,
        "",
        r#"method { unregistered: "BAD METHOD" }"#,
        "method {}",
    ];

    /// Where a bad leaf (`LEAF`) can sit in a route's condition.
    const REQUEST_PLACES: [&str; 6] = [
        "LEAF",
        "all { matches { method { registered: GET } } matches { LEAF } }",
        "all { matches { LEAF } }",
        r#"any { matches { LEAF } matches { path { regex: "/a" } } }"#,
        "not { LEAF }",
        "all { matches { any { matches { not { LEAF } } matches { all {} } } } }",
    ];

    #[test]
    fn a_bad_leaf_anywhere_drops_the_whole_route() {
        for place in REQUEST_PLACES {
            for leaf in BAD_REQUEST_LEAVES {
                let condition = place.replace("LEAF", leaf);
                // The broken route comes first; the next route still applies,
                // in its place, and the broken one matches nothing (an `all`
                // left without its bad leaf would match every request).
                let p = conv(&format!(
                    r#"routes {{ condition {{ {condition} }}
                                metrics_labels {{ key: "route" value: "broken" }} }}
                       routes {{ condition {{ path {{ regex: "/a" }} }}
                                metrics_labels {{ key: "route" value: "next" }} }}"#
                ));
                assert_eq!(p.routes.len(), 1, "{condition}");
                assert_eq!(p.routes[0].labels[0].1, "next", "{condition}");
                assert_eq!(p.route_for("GET", "/a"), Some(0), "{condition}");
                assert_eq!(p.route_for("GET", "/b"), None, "{condition}");
            }
        }
        // With a good leaf every place converts, so the drops above are the
        // bad leaf's doing.
        for place in REQUEST_PLACES {
            let good = place.replace("LEAF", r#"path { regex: "/b" }"#);
            assert!(cond(&good).is_some(), "{good}");
        }
        // Empty combinators are conditions, not errors.
        assert!(cond("all {}").expect("kept").matches("GET", "/"));
        assert!(!cond("any {}").expect("kept").matches("GET", "/"));
    }

    #[test]
    fn depth_limit() {
        // 31 `not`s around a path is 32 levels: kept.
        assert!(!cond(&nots(31))
            .expect("32 levels kept")
            .matches("GET", "/a"));
        assert!(cond(&nots(32)).is_none());
        assert!(cond(&nots(40)).is_none());
        let all = "all { matches { method { registered: GET } } matches { ".repeat(40);
        assert!(cond(&format!("{all}{}{}", nots(0), " } }".repeat(40))).is_none());
    }

    /// protobuf's parser stops at 100 levels, but a message built in code has
    /// no limit. Built in a loop (text format would recurse), converted, then
    /// torn down iteratively: the generated `Drop` recurses once per level
    /// (in a debug build 10,000 levels still fit a 2 MiB test thread, 20,000
    /// overflow it), so the test does not depend on frame sizes.
    #[test]
    fn ten_thousand_levels_crash_nothing() {
        let mut m = pb::RequestMatch::new();
        m.match_ = Some(Rm::Path(pb::PathMatch::new()));
        for i in 0..10_000 {
            let mut outer = pb::RequestMatch::new();
            outer.match_ = Some(if i % 2 == 0 {
                Rm::Not(Box::new(m))
            } else {
                let mut seq = pb::request_match::Seq::new();
                seq.matches.push(m);
                Rm::Any(seq)
            });
            m = outer;
        }
        let mut pb_profile = pb::DestinationProfile::new();
        pb_profile.routes.push(pb::Route::new());
        pb_profile.routes[0].condition = MessageField::some(m);
        assert!(profile(&pb_profile, "books:80", &PathPatterns::default())
            .routes
            .is_empty());
        let mut pending: Vec<pb::RequestMatch> =
            pb_profile.routes[0].condition.take().into_iter().collect();
        while let Some(mut node) = pending.pop() {
            match node.match_.take() {
                Some(Rm::Not(inner)) => pending.push(*inner),
                Some(Rm::All(s)) | Some(Rm::Any(s)) => pending.extend(s.matches),
                _ => {}
            }
        }
    }

    #[test]
    fn response_classes() {
        let r = route(
            "response_classes { condition { status { min: 500 max: 599 } } is_failure: true }
             response_classes { condition { status { max: 404 } } is_failure: true }
             response_classes { condition { status { min: 429 } } }
             response_classes { condition { status {} } is_failure: true }
             response_classes { condition { status { min: 99 max: 200 } } }
             response_classes { condition { status { min: 500 max: 1000 } } }
             response_classes { condition { status { min: 600 max: 500 } } }
             response_classes { is_failure: true }
             response_classes { condition {} }
             response_classes { condition { any { matches { status {} }
                                                  matches { status { min: 502 max: 504 } } } } }
             response_classes { condition { status { min: 404 max: 404 } } }
             response_classes { condition { status { min: 100 max: 999 } } }",
        );
        let st = |min, max| ResponseMatch::Status { min, max };
        let want = [
            (st(500, 599), true),
            (st(404, 404), false),
            (st(100, 999), false),
        ];
        let got = r
            .response_classes
            .iter()
            .map(|c| (c.condition.clone(), c.is_failure));
        assert_eq!(got.collect::<Vec<_>>(), want);
        let deep = format!(
            "response_classes {{ condition {{ {}status {{ min: 500 max: 500 }}{} }} }}",
            "not { ".repeat(40),
            " }".repeat(40)
        );
        assert!(route(&deep).response_classes.is_empty());
    }

    /// Response leaves that do not convert: each bound missing (as Linkerd's
    /// controller sends `{min: 500}`: max 0), both missing, out of range,
    /// reversed, and an empty match.
    const BAD_RESPONSE_LEAVES: [&str; 6] = [
        "status { min: 500 }",
        "status { max: 503 }",
        "status {}",
        "status { min: 99 max: 200 }",
        "status { min: 504 max: 502 }",
        "",
    ];

    /// Where a bad leaf (`LEAF`) can sit in a class's condition.
    const RESPONSE_PLACES: [&str; 5] = [
        "LEAF",
        "all { matches { status { min: 500 max: 599 } } matches { LEAF } }",
        "any { matches { LEAF } matches { status { min: 500 max: 599 } } }",
        "not { LEAF }",
        "all { matches { any { matches { not { LEAF } } matches { all {} } } } }",
    ];

    #[test]
    fn a_bad_leaf_anywhere_drops_the_whole_response_class() {
        for place in RESPONSE_PLACES {
            for leaf in BAD_RESPONSE_LEAVES {
                let condition = place.replace("LEAF", leaf);
                // The broken class would call a 503 a success; it is dropped,
                // and the next class decides.
                let r = route(&format!(
                    "response_classes {{ condition {{ {condition} }} }}
                     response_classes {{ condition {{ status {{ min: 500 max: 599 }} }}
                                         is_failure: true }}"
                ));
                assert_eq!(r.response_classes.len(), 1, "{condition}");
                let class = crate::profile::classify(&r.response_classes, 503, None);
                assert_eq!(
                    class,
                    crate::profile::Classification::Failure,
                    "{condition}"
                );
            }
        }
        for place in RESPONSE_PLACES {
            let good = place.replace("LEAF", "status { min: 200 max: 299 }");
            let r = route(&format!("response_classes {{ condition {{ {good} }} }}"));
            assert_eq!(r.response_classes.len(), 1, "{good}");
        }
    }
}
