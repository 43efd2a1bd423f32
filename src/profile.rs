//! Domain types of a destination profile: the routes, response classes, retry
//! budget and traffic split that one `GetProfile` answer describes.
//!
//! Values are built on a `profile:<name:port>` discovery thread by
//! `discovery/convert.rs` (the only place that sees protobuf) and handed to the
//! event loop as an immutable snapshot; every list is an `Arc<[..]>`, so cloning a
//! `Profile` is cheap. Route lookup lives in `router.rs`, endpoint types in
//! `endpoints.rs`. Nothing here does I/O.
//!
//! The validity rules that are not about protobuf live here too, so every
//! producer of these values applies the same ones: path regex anchoring and
//! size limit (`RequestMatch::path`) and `name:port` normalisation
//! (`normalize_authority`, `normalize_dns_name`).
//!
//! Matching recurses over `RequestMatch`/`ResponseMatch`; that is safe because
//! `convert` refuses conditions nested deeper than `convert::MAX_MATCH_DEPTH`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// Everything spoke knows about how to route requests to one `name:port`.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Tried in order, first match wins; no match means the default route.
    pub routes: Arc<[Route]>,
    /// Shared by every retryable route; `None` disables retries.
    pub retry_budget: Option<RetryBudget>,
    /// When non-empty, requests are split across these authorities by weight.
    pub dst_overrides: Arc<[WeightedDst]>,
    /// Connections are plain TCP; HTTP routes do not apply.
    pub opaque_protocol: bool,
    /// Service name without port and without trailing dot, when known.
    pub fully_qualified_name: Option<String>,
    /// Set when the target is a single known endpoint rather than a service.
    pub endpoint: Option<crate::endpoints::Endpoint>,
}

impl Default for Profile {
    /// The profile in force before (or without) any answer: no routes, so
    /// every request takes the default route.
    fn default() -> Self {
        Profile {
            routes: Arc::from(Vec::new()),
            retry_budget: None,
            dst_overrides: Arc::from(Vec::new()),
            opaque_protocol: false,
            fully_qualified_name: None,
            endpoint: None,
        }
    }
}

impl Profile {
    /// Index into `routes` of the route serving this request, or `None` for the
    /// default route. `path` must not include the query string.
    pub fn route_for(&self, method: &str, path: &str) -> Option<usize> {
        crate::router::find(&self.routes, method, path)
    }
}

/// One profile route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub condition: RequestMatch,
    /// First matching class decides success or failure; see [`classify`].
    pub response_classes: Arc<[ResponseClass]>,
    /// The route's `metrics_labels`, sorted by key (emitted as `rt_<key>`).
    pub labels: Arc<[(String, String)]>,
    /// Retries also need the profile's `retry_budget`.
    pub is_retryable: bool,
    /// Covers the whole request, every retry included. `None`: no timeout.
    pub timeout: Option<Duration>,
}

/// A condition on the request head.
#[derive(Clone, Debug)]
pub enum RequestMatch {
    /// Every sub-match holds; empty matches everything.
    All(Vec<RequestMatch>),
    /// At least one sub-match holds; empty matches nothing.
    Any(Vec<RequestMatch>),
    Not(Box<RequestMatch>),
    /// Already anchored as `^(?:...)$`, so it must match the whole path.
    Path(PathRegex),
    Method(Method),
}

impl RequestMatch {
    /// Whether a request with this method and path (query excluded) matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        match self {
            RequestMatch::All(ms) => ms.iter().all(|m| m.matches(method, path)),
            RequestMatch::Any(ms) => ms.iter().any(|m| m.matches(method, path)),
            RequestMatch::Not(m) => !m.matches(method, path),
            RequestMatch::Path(re) => re.is_match(path),
            RequestMatch::Method(m) => m.as_str() == method,
        }
    }
}

// `regex::Regex` has no `PartialEq`; two path matches are equal when their
// (already anchored) patterns are, which lets a discovery thread skip
// publishing a profile identical to the last one.
impl PartialEq for RequestMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RequestMatch::All(a), RequestMatch::All(b)) => a == b,
            (RequestMatch::Any(a), RequestMatch::Any(b)) => a == b,
            (RequestMatch::Not(a), RequestMatch::Not(b)) => a == b,
            (RequestMatch::Path(a), RequestMatch::Path(b)) => a.as_str() == b.as_str(),
            (RequestMatch::Method(a), RequestMatch::Method(b)) => a == b,
            _ => false,
        }
    }
}

/// An HTTP method. Compared case-sensitively, as HTTP methods are: an
/// extension method `get` is not `GET`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Connect,
    Head,
    Trace,
    /// Any other method token (RFC 9110 `token` characters only).
    Extension(String),
}

impl Method {
    /// Parses a method token; `None` if it is empty or has a character that
    /// an HTTP token may not contain.
    pub fn from_token(token: &str) -> Option<Method> {
        let m = match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            "HEAD" => Method::Head,
            "TRACE" => Method::Trace,
            _ if !token.is_empty() && token.bytes().all(is_tchar) => {
                Method::Extension(token.to_string())
            }
            _ => return None,
        };
        Some(m)
    }

    /// The method as it appears on the request line.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
            Method::Head => "HEAD",
            Method::Trace => "TRACE",
            Method::Extension(s) => s,
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A condition on the response status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseMatch {
    /// Every sub-match holds; empty matches everything.
    All(Vec<ResponseMatch>),
    /// At least one sub-match holds; empty matches nothing.
    Any(Vec<ResponseMatch>),
    Not(Box<ResponseMatch>),
    /// Inclusive range of status codes, both within 100..=999.
    Status {
        min: u16,
        max: u16,
    },
}

impl ResponseMatch {
    pub fn matches(&self, status: u16) -> bool {
        match self {
            ResponseMatch::All(ms) => ms.iter().all(|m| m.matches(status)),
            ResponseMatch::Any(ms) => ms.iter().any(|m| m.matches(status)),
            ResponseMatch::Not(m) => !m.matches(status),
            ResponseMatch::Status { min, max } => (*min..=*max).contains(&status),
        }
    }
}

/// A route's rule for calling a response a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseClass {
    pub condition: ResponseMatch,
    pub is_failure: bool,
}

/// The outcome of a response, for metrics and for the retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    Success,
    Failure,
}

impl Classification {
    /// The `classification` metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Success => "success",
            Classification::Failure => "failure",
        }
    }
}

/// gRPC status codes Linkerd counts as failures when no class matched:
/// UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, INTERNAL, UNAVAILABLE, DATA_LOSS.
const GRPC_FAILURE_CODES: [u32; 6] = [2, 4, 7, 13, 14, 15];

/// Classifies a response: the first class whose condition matches `status`
/// decides. With none matching, the gRPC status decides when the response has
/// one; otherwise a 5xx status is a failure.
pub fn classify(
    classes: &[ResponseClass],
    status: u16,
    grpc_status: Option<u32>,
) -> Classification {
    let failed = match classes.iter().find(|c| c.condition.matches(status)) {
        Some(class) => class.is_failure,
        None => match grpc_status {
            Some(code) => GRPC_FAILURE_CODES.contains(&code),
            None => (500..=599).contains(&status),
        },
    };
    if failed {
        Classification::Failure
    } else {
        Classification::Success
    }
}

/// Parameters of the token-bucket retry budget (Tower's TpsBudget).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// Retries allowed per original request, in 0..=1000.
    pub retry_ratio: f32,
    /// Retries always allowed per second, whatever the ratio says.
    pub min_retries_per_second: u32,
    /// Window over which requests are remembered, 1s..=60s.
    pub ttl: Duration,
}

/// One backend of a traffic split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedDst {
    /// `name:port`, lower-case, no trailing dot: the `Get` lookup path.
    pub authority: String,
    /// Relative to the other weights of the same list; never 0.
    pub weight: u32,
}

// === Validated constructors (used by `discovery/convert.rs`) ===

/// Compiled-size limit of one path regex, so a hostile pattern cannot take
/// much memory or make matching slow. (The `regex` default, which Linkerd
/// keeps, is 10 MiB.) Unicode classes are what get big: `\p{L}{1,64}` compiles
/// to megabytes and is rejected, while `[^/]{1,64}` is tiny.
pub const PATH_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled path pattern, anchored as `^(?:...)$`; clones share it.
///
/// Request paths are ASCII: the HTTP/1 parser rejects any other byte in a
/// request target with 400. On ASCII input a pattern means the same with or
/// without Unicode mode (`\w`, `.`, `[^/]`, `(?i)` and `\b` differ only on
/// non-ASCII text), and without it a class such as `[^/]` compiles to one byte
/// range instead of a UTF-8 automaton: about 10 KB of memory to build instead
/// of 320 KB. So an ASCII pattern is compiled with Unicode off; a pattern that
/// needs Unicode (`\p{Greek}`, a non-ASCII literal) keeps it, and matches
/// exactly as `regex::Regex` would.
#[derive(Clone, Debug)]
pub struct PathRegex(Arc<CompiledPath>);

#[derive(Debug)]
struct CompiledPath {
    re: regex::bytes::Regex,
    unicode: bool,
}

impl PathRegex {
    /// Compiles an already anchored pattern.
    fn new(anchored: &str) -> Result<PathRegex, regex::Error> {
        let build = |unicode: bool| {
            regex::bytes::RegexBuilder::new(anchored)
                .unicode(unicode)
                .size_limit(PATH_REGEX_SIZE_LIMIT)
                .build()
        };
        let ascii = anchored.is_ascii().then(|| build(false).ok()).flatten();
        let compiled = match ascii {
            Some(re) => CompiledPath { re, unicode: false },
            // Errors are reported as the Unicode compile sees them, which is
            // how every other implementation of the pattern language sees them.
            _ => CompiledPath {
                re: build(true)?,
                unicode: true,
            },
        };
        Ok(PathRegex(Arc::new(compiled)))
    }

    /// The anchored pattern.
    pub fn as_str(&self) -> &str {
        self.0.re.as_str()
    }

    /// Whether `path` (ASCII, query excluded) matches as a whole.
    pub fn is_match(&self, path: &str) -> bool {
        self.0.re.is_match(path.as_bytes())
    }

    /// This pattern for a set compiled with Unicode off: the ones that need
    /// Unicode turn it back on for themselves.
    pub fn set_pattern(&self) -> std::borrow::Cow<'_, str> {
        if self.0.unicode {
            format!("(?u:{})", self.as_str()).into()
        } else {
            self.as_str().into()
        }
    }
}

/// Path patterns already compiled, shared by every profile that uses the same
/// text. Services often repeat the same routes (`/healthz`, `/api/v1/...`),
/// and a destination's profile is converted again on every update; with this,
/// one compiled pattern (and its match cache) serves them all, and the
/// discovery threads that find a pattern here never run the compiler (whose
/// stack use stays resident in each thread that ran it). Holds weak
/// references: a pattern no profile uses any more is freed with the last one.
#[derive(Debug, Default)]
pub struct PathPatterns {
    inner: Mutex<PatternMap>,
}

#[derive(Debug, Default)]
struct PatternMap {
    compiled: HashMap<Box<str>, Weak<CompiledPath>>,
    /// Dead entries are swept when the map reaches this size.
    sweep_at: usize,
}

impl PathPatterns {
    /// The compiled form of an anchored pattern, compiling it on a miss.
    fn get_or_compile(&self, anchored: &str) -> Result<PathRegex, regex::Error> {
        if let Some(c) = self.lock().compiled.get(anchored).and_then(Weak::upgrade) {
            return Ok(PathRegex(c));
        }
        // Compiled without the lock: a slow pattern does not hold up others.
        // Two threads may compile the same text at once; the first stored wins.
        let fresh = PathRegex::new(anchored)?;
        let mut map = self.lock();
        if let Some(c) = map.compiled.get(anchored).and_then(Weak::upgrade) {
            return Ok(PathRegex(c));
        }
        if map.compiled.len() >= map.sweep_at {
            map.compiled.retain(|_, c| c.strong_count() > 0);
            map.sweep_at = (2 * map.compiled.len()).max(64);
        }
        map.compiled
            .insert(anchored.into(), Arc::downgrade(&fresh.0));
        Ok(fresh)
    }

    /// How many patterns are stored (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().compiled.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PatternMap> {
        // Every update leaves the map consistent, so a panic elsewhere while
        // holding the lock leaves nothing to repair.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RequestMatch {
    /// A path match anchored to the whole path as `^(?:...)$`.
    ///
    /// The pattern is trimmed, and one leading `^` and one unescaped trailing
    /// `$` are removed first so they are not doubled (inside the outer anchors
    /// they mean the same thing). The group makes `a|b` anchor as a whole. The
    /// bare pattern is parsed on its own first, because an unbalanced one such
    /// as `a)|(b` would otherwise close the group and escape the anchors.
    pub fn path(pattern: &str) -> Result<RequestMatch, regex::Error> {
        RequestMatch::shared_path(pattern, &PathPatterns::default())
    }

    /// [`RequestMatch::path`], reusing the compiled form from `patterns` when
    /// another profile already has the same one.
    pub fn shared_path(
        pattern: &str,
        patterns: &PathPatterns,
    ) -> Result<RequestMatch, regex::Error> {
        let trimmed = pattern.trim();
        let inner = trimmed.strip_prefix('^').unwrap_or(trimmed);
        let inner = match inner.strip_suffix('$') {
            // An odd run of backslashes before `$` escapes it: keep the literal.
            Some(rest) if rest.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 0 => rest,
            _ => inner,
        };
        regex_syntax::Parser::new()
            .parse(inner)
            .map_err(|e| regex::Error::Syntax(e.to_string()))?;
        patterns
            .get_or_compile(&format!("^(?:{inner})$"))
            .map(RequestMatch::Path)
    }
}

/// Normalises an authority `name[:port]` to the `name:port` form used as a
/// lookup path: the name as [`normalize_dns_name`] makes it, port 80 when
/// absent. `None` for anything else, IP literals in brackets included.
pub fn normalize_authority(raw: &str) -> Option<String> {
    let (name, port) = match raw.rsplit_once(':') {
        Some((name, port)) => (name, port),
        None => (raw, "80"),
    };
    // Decimal digits only: `str::parse` would accept a leading `+`.
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some(format!("{}:{port}", normalize_dns_name(name)?))
}

/// A DNS-style name with one trailing dot trimmed: at most 253 characters,
/// labels of 1..=63 letters, digits, `-` or `_`, not starting or ending with
/// `-`. Returned lower-case, as DNS compares names case-insensitively.
pub fn normalize_dns_name(raw: &str) -> Option<String> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(min: u16, max: u16) -> ResponseMatch {
        ResponseMatch::Status { min, max }
    }

    fn path(re: &str) -> RequestMatch {
        RequestMatch::Path(PathRegex::new(re).expect("test regex"))
    }

    #[test]
    fn method_tokens() {
        assert_eq!(Method::from_token("GET"), Some(Method::Get));
        assert_eq!(Method::from_token("TRACE"), Some(Method::Trace));
        assert_eq!(
            Method::from_token("PURGE"),
            Some(Method::Extension("PURGE".into()))
        );
        // Case matters: lower-case `get` is an extension method, not GET.
        assert_eq!(
            Method::from_token("get"),
            Some(Method::Extension("get".into()))
        );
        assert_eq!(Method::from_token(""), None);
        assert_eq!(Method::from_token("GE T"), None);
        assert_eq!(Method::from_token("GET\r\n"), None);
        assert_eq!(Method::Extension("PURGE".into()).as_str(), "PURGE");
    }

    #[test]
    fn method_match_is_case_sensitive() {
        let m = RequestMatch::Method(Method::Get);
        assert!(m.matches("GET", "/"));
        assert!(!m.matches("get", "/"));
        assert!(!m.matches("POST", "/"));
        let ext = RequestMatch::Method(Method::Extension("get".into()));
        assert!(ext.matches("get", "/"));
        assert!(!ext.matches("GET", "/"));
    }

    #[test]
    fn request_combinators() {
        assert!(RequestMatch::All(vec![]).matches("GET", "/"));
        assert!(!RequestMatch::Any(vec![]).matches("GET", "/"));
        let m = RequestMatch::All(vec![RequestMatch::Method(Method::Post), path("^(?:/a)$")]);
        assert!(m.matches("POST", "/a"));
        assert!(!m.matches("GET", "/a"));
        assert!(!m.matches("POST", "/b"));
        let not = RequestMatch::Not(Box::new(m));
        assert!(!not.matches("POST", "/a"));
        assert!(not.matches("GET", "/a"));
    }

    #[test]
    fn request_match_equality_uses_pattern() {
        assert_eq!(path("^(?:/a)$"), path("^(?:/a)$"));
        assert_ne!(path("^(?:/a)$"), path("^(?:/b)$"));
        assert_ne!(path("^(?:/a)$"), RequestMatch::Method(Method::Get));
    }

    #[test]
    fn response_combinators() {
        assert!(status(500, 599).matches(500));
        assert!(status(500, 599).matches(599));
        assert!(!status(500, 599).matches(600));
        assert!(ResponseMatch::All(vec![]).matches(200));
        assert!(!ResponseMatch::Any(vec![]).matches(200));
        let m = ResponseMatch::Any(vec![status(404, 404), status(500, 503)]);
        assert!(m.matches(404) && m.matches(502) && !m.matches(504));
        assert!(ResponseMatch::Not(Box::new(m)).matches(504));
    }

    #[test]
    fn classify_first_class_wins() {
        let classes = [
            ResponseClass {
                condition: status(500, 500),
                is_failure: false,
            },
            ResponseClass {
                condition: status(500, 599),
                is_failure: true,
            },
            ResponseClass {
                condition: status(404, 404),
                is_failure: true,
            },
        ];
        assert_eq!(classify(&classes, 500, None), Classification::Success);
        assert_eq!(classify(&classes, 503, None), Classification::Failure);
        assert_eq!(classify(&classes, 404, None), Classification::Failure);
        // A matching class beats the gRPC status.
        assert_eq!(classify(&classes, 500, Some(14)), Classification::Success);
    }

    #[test]
    fn classify_fallbacks() {
        // No class matches: gRPC status decides when present.
        for code in [2, 4, 7, 13, 14, 15] {
            assert_eq!(classify(&[], 200, Some(code)), Classification::Failure);
        }
        for code in [0, 1, 3, 5, 6, 8, 9, 10, 11, 12, 16] {
            assert_eq!(classify(&[], 200, Some(code)), Classification::Success);
        }
        // ... even over a 5xx status.
        assert_eq!(classify(&[], 503, Some(0)), Classification::Success);
        // Without gRPC status, 5xx fails.
        assert_eq!(classify(&[], 499, None), Classification::Success);
        assert_eq!(classify(&[], 500, None), Classification::Failure);
        assert_eq!(classify(&[], 599, None), Classification::Failure);
        assert_eq!(classify(&[], 600, None), Classification::Success);
        let classes = [ResponseClass {
            condition: status(404, 404),
            is_failure: true,
        }];
        assert_eq!(classify(&classes, 502, None), Classification::Failure);
        assert_eq!(Classification::Failure.as_str(), "failure");
    }

    #[test]
    fn default_profile_has_default_route_only() {
        let p = Profile::default();
        assert!(p.routes.is_empty());
        assert_eq!(p.route_for("GET", "/"), None);
        assert!(p.retry_budget.is_none() && p.dst_overrides.is_empty());
    }

    #[test]
    fn path_is_trimmed_and_anchored_once() {
        for (raw, want) in [
            ("/books", "^(?:/books)$"),
            (" /books\t", "^(?:/books)$"),
            ("^/books$", "^(?:/books)$"),
            ("^/books", "^(?:/books)$"),
            ("/a|/b", "^(?:/a|/b)$"),
            (r"/price\$", r"^(?:/price\$)$"),
            (r"/x\\$", r"^(?:/x\\)$"),
            ("^", "^(?:)$"),
        ] {
            match RequestMatch::path(raw) {
                Ok(RequestMatch::Path(re)) => assert_eq!(re.as_str(), want, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn anchored_path_matches_whole_path_only() {
        let m = RequestMatch::path("/books").expect("valid");
        assert!(m.matches("GET", "/books"));
        assert!(!m.matches("GET", "/books/1") && !m.matches("GET", "/x/books"));
        let alt = RequestMatch::path("/a|/b").expect("valid");
        assert!(alt.matches("GET", "/b") && !alt.matches("GET", "/x/b"));
        assert!(!alt.matches("GET", "/a/x"));
        let dollar = RequestMatch::path(r"/price\$").expect("valid");
        assert!(dollar.matches("GET", "/price$") && !dollar.matches("GET", "/price"));
        // `^(?:/a)|(/b)$` would compile: the bare pattern is checked alone first.
        assert!(RequestMatch::path("/a)|(/b").is_err());
        assert!(RequestMatch::path("/books/(").is_err());
    }

    #[test]
    fn path_regex_size_limit() {
        for huge in [r"(?:\p{L}{100}){100}", r"(?:[a-z]{100}){1000}"] {
            let got = RequestMatch::path(huge);
            assert!(
                matches!(got, Err(regex::Error::CompiledTooBig(_))),
                "{huge}: {got:?}"
            );
        }
        assert!(RequestMatch::path(r"/api/v[0-9]+/books/[^/]+/reviews/[0-9a-f-]{36}").is_ok());
    }

    /// On ASCII paths (the only ones the parser lets through) the compiled
    /// pattern answers exactly as a Unicode `regex::Regex` of the same text,
    /// whether it was built with Unicode off or needed it on.
    #[test]
    fn path_regex_matches_as_a_unicode_regex_on_ascii_paths() {
        let patterns = [
            r"/books/[^/]+",
            r"/\w+/\d{1,3}",
            r"(?i)/BOOKS/.*",
            r"/k\b.*",
            r"/[[:alpha:]]+/\s?x",
            r"/a.c",
            r"/\W+",
            r"/[^\x{e9}]+",
            r"/\p{L}+/\P{Greek}*",
            r"/caf\x{e9}|/cafe",
            "/café|/cafe",
            r"(?i)/ſ|/\x{212A}",
            r"(?-u:\w)+",
        ];
        let paths = [
            "/books/1",
            "/books/",
            "/BOOKS/x/y",
            "/books/a%20b",
            "/abc",
            "/a-c",
            "/k",
            "/kx",
            "/k-x",
            "/s",
            "/K",
            "/S",
            "/alpha/ x",
            "/alpha/x",
            "/cafe",
            "/caf",
            "/x_9/123",
            "/!!",
            "/%C3%A9",
            "",
        ];
        for p in patterns {
            let RequestMatch::Path(ours) = RequestMatch::path(p).expect(p) else {
                unreachable!()
            };
            let reference = regex::Regex::new(ours.as_str()).expect(p);
            let set = regex::bytes::RegexSetBuilder::new([ours.set_pattern()])
                .unicode(false)
                .build()
                .expect(p);
            for path in paths {
                let want = reference.is_match(path);
                assert_eq!(ours.is_match(path), want, "{p} on {path}");
                assert_eq!(set.is_match(path.as_bytes()), want, "set {p} on {path}");
            }
        }
    }

    fn compiled(m: &RequestMatch) -> &PathRegex {
        match m {
            RequestMatch::Path(re) => re,
            other => panic!("not a path: {other:?}"),
        }
    }

    #[test]
    fn path_patterns_share_one_compiled_form_per_text() {
        let patterns = PathPatterns::default();
        let a = RequestMatch::shared_path("/books/[^/]+", &patterns).expect("valid");
        // Same anchored text once trimmed and anchored: the same compiled regex.
        let b = RequestMatch::shared_path(" ^/books/[^/]+$", &patterns).expect("valid");
        let other = RequestMatch::shared_path("/authors", &patterns).expect("valid");
        assert!(Arc::ptr_eq(&compiled(&a).0, &compiled(&b).0));
        assert!(!Arc::ptr_eq(&compiled(&a).0, &compiled(&other).0));
        assert_eq!(patterns.len(), 2);
        // A bad pattern is reported every time and never stored.
        for _ in 0..2 {
            assert!(RequestMatch::shared_path("/books/(", &patterns).is_err());
        }
        assert_eq!(patterns.len(), 2);
        // Without the shared set, each call compiles its own.
        let c = RequestMatch::path("/books/[^/]+").expect("valid");
        assert!(!Arc::ptr_eq(&compiled(&a).0, &compiled(&c).0));
    }

    #[test]
    fn path_patterns_free_what_no_profile_uses() {
        let patterns = PathPatterns::default();
        let kept = RequestMatch::shared_path("/kept", &patterns).expect("valid");
        for i in 0..1_000 {
            // Each dropped at once: its entry is dead and swept later.
            RequestMatch::shared_path(&format!("/gone/{i}"), &patterns).expect("valid");
        }
        assert!(
            patterns.len() <= 128,
            "dead entries swept: {}",
            patterns.len()
        );
        let again = RequestMatch::shared_path("/kept", &patterns).expect("valid");
        assert!(Arc::ptr_eq(&compiled(&kept).0, &compiled(&again).0));
        assert_eq!(Arc::strong_count(&compiled(&kept).0), 2);
    }

    #[test]
    fn authorities() {
        for (raw, want) in [
            (
                "books-v1.default.svc.cluster.local:7000",
                "books-v1.default.svc.cluster.local:7000",
            ),
            ("books", "books:80"),
            ("Books.Default.:8080", "books.default:8080"),
            ("10.1.2.3:8080", "10.1.2.3:8080"),
            ("a_b:65535", "a_b:65535"),
        ] {
            assert_eq!(normalize_authority(raw).as_deref(), Some(want), "{raw}");
        }
        let long_label = format!("{}:80", "a".repeat(64));
        let long_name = format!("{}:80", ["a"; 128].join("."));
        let bad = ":80 books: books:0 books:65536 books:+80 -a:80 a-:80 a..b:80 [::1]:80 a:b:80 .";
        for raw in bad
            .split(' ')
            .chain(["", "bad name:80", &long_label, &long_name])
        {
            assert_eq!(normalize_authority(raw), None, "{raw:?}");
        }
        assert_eq!(normalize_dns_name("x.").as_deref(), Some("x"));
        assert_eq!(normalize_dns_name("."), None);
    }
}
