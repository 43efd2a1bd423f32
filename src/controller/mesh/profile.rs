//! ServiceProfile `spec` (YAML) -> `DestinationProfile` (protobuf), converted as Linkerd's
//! controller converts it, so a proxy sees the same messages from spoke as from Linkerd.
//!
//! Pure; runs on the controller thread that parses the file. The document walk and lookups
//! live in `controller/mesh.rs`, typed YAML reads in `controller/mesh/yaml.rs`.
//!
//! - `routes[].name` becomes `metrics_labels {"route": name}`; `condition` is required.
//! - A condition object with several keys becomes `all` of them, in Linkerd's order
//!   (`all`, `any`, `method`, `not`, `pathRegex`; for responses `all`, `any`, `status`,
//!   `not`). A condition with none of them is an error. Empty strings count as absent.
//! - `not` may be one object or a list (the CRD declares a list). A one-element list is that
//!   element; a list of several means "none of them": `not(any(...))`. An empty list is an error.
//! - `status: {min, max}`: both bounds are required (`{min: 500, max: 500}` for one code),
//!   codes 100-599, `min <= max`. Linkerd's controller would send a missing bound as 0,
//!   which linkerd2-proxy cannot apply (it drops the class); refusing it keeps one file
//!   meaning one thing to every proxy.
//! - Method names `GET POST PUT DELETE PATCH OPTIONS CONNECT HEAD TRACE` (case-sensitive)
//!   map to the registered enum; any other HTTP token is sent as `unregistered`; a name that
//!   is not a token (`"BAD METHOD"`) is an error.
//! - `pathRegex` must compile as the proxy compiles it: anchored to the whole path, within
//!   spoke's size limit (`crate::profile::RequestMatch::path`, the function the client uses).
//!   It is still sent as written.
//! - `dstOverrides[]` (`profile/dst_overrides.rs`): the authority must be `name:port`;
//!   the weight is an integer or a Kubernetes quantity, sent as Linkerd sends it.
//! - Unlike Linkerd's controller, which sends a bad regex, method token, authority or
//!   one-bound range on and leaves the proxy to drop (or misread) it, these are errors: no
//!   proxy could apply them as written, so the file is refused with the field named and the
//!   last good file stays in force.
//! - `timeout` and `retryBudget.ttl` are Go durations (see `crate::duration`); zero is sent
//!   as unset, as Linkerd does.
//! - A profile without `retryBudget` gets Linkerd's default budget: ratio 0.2, 10 retries per
//!   second, ttl 10s. With one, all three fields are required (as in the CRD).
//! - `opaquePorts` is a list of ports, integers or strings; a `"4000-4010"` range is also
//!   read. The profile served for one of those ports has `opaque_protocol = true`.

use std::collections::BTreeSet;
use std::time::Duration;

use protobuf::well_known_types::duration::Duration as PbDuration;
use protobuf::MessageField;
use yaml_rust2::Yaml;

mod dst_overrides;

use dst_overrides::weighted_dst;

use super::yaml::{
    boolean, fail, get, go_duration, index_path, integer, key_path, kind_of, mapping, optional_seq,
    required, sequence, string, Ctx, Field,
};
use crate::discovery::convert::regex_reason;
use crate::profile::Method;
use crate::proto::destination::{
    request_match, response_match, DestinationProfile, HttpStatusRange, PathMatch, RequestMatch,
    ResponseClass, ResponseMatch, RetryBudget, Route,
};
use crate::proto::http_types::{http_method, HttpMethod};

/// Linkerd's default retry budget, sent for profiles that have none.
const DEFAULT_RETRY_RATIO: f32 = 0.2;
const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
const DEFAULT_RETRY_TTL: Duration = Duration::from_secs(10);

/// One ServiceProfile, converted except for the port-dependent `opaque_protocol`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Profile {
    /// `fully_qualified_name`, routes, budget and overrides; `opaque_protocol` false.
    pub(super) proto: DestinationProfile,
    pub(super) opaque_ports: BTreeSet<u16>,
}

pub(super) fn default_retry_budget() -> RetryBudget {
    let mut budget = RetryBudget::new();
    budget.retry_ratio = DEFAULT_RETRY_RATIO;
    budget.min_retries_per_second = DEFAULT_MIN_RETRIES_PER_SECOND;
    budget.ttl = pb_duration(DEFAULT_RETRY_TTL);
    budget
}

/// Zero is "unset", as Linkerd's controller sends it.
fn pb_duration(d: Duration) -> MessageField<PbDuration> {
    if d.is_zero() {
        return MessageField::none();
    }
    let mut pb = PbDuration::new();
    // `duration::parse` caps values at i64::MAX nanoseconds, so the seconds always fit.
    pb.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    pb.nanos = d.subsec_nanos() as i32;
    MessageField::some(pb)
}

/// Converts the `spec` of the ServiceProfile `name` (already normalised).
pub(super) fn profile_spec(ctx: &Ctx, name: &str, spec: &Yaml, path: &str) -> Field<Profile> {
    let map = mapping(spec, path)?;
    ctx.warn_unknown(
        map,
        path,
        &["routes", "retryBudget", "dstOverrides", "opaquePorts"],
    );
    let mut proto = DestinationProfile::new();
    proto.fully_qualified_name = name.to_string();
    let routes_path = key_path(path, "routes");
    for (i, route) in optional_seq(map, "routes", path)?.iter().enumerate() {
        let route = route_spec(ctx, route, &index_path(&routes_path, i))?;
        proto.routes.push(route);
    }
    proto.retry_budget = MessageField::some(match get(map, "retryBudget") {
        Some(budget) => retry_budget(ctx, budget, &key_path(path, "retryBudget"))?,
        None => default_retry_budget(),
    });
    let dst_path = key_path(path, "dstOverrides");
    for (i, dst) in optional_seq(map, "dstOverrides", path)?.iter().enumerate() {
        let dst = weighted_dst(ctx, dst, &index_path(&dst_path, i))?;
        proto.dst_overrides.push(dst);
    }
    let mut opaque_ports = BTreeSet::new();
    let ports_path = key_path(path, "opaquePorts");
    for (i, port) in optional_seq(map, "opaquePorts", path)?.iter().enumerate() {
        opaque_ports.extend(opaque_port(port, &index_path(&ports_path, i))?);
    }
    Ok(Profile {
        proto,
        opaque_ports,
    })
}

fn route_spec(ctx: &Ctx, v: &Yaml, path: &str) -> Field<Route> {
    let map = mapping(v, path)?;
    let known = [
        "name",
        "condition",
        "responseClasses",
        "isRetryable",
        "timeout",
    ];
    ctx.warn_unknown(map, path, &known);
    let mut route = Route::new();
    let name = string(required(map, "name", path)?, &key_path(path, "name"))?;
    route.metrics_labels.insert("route".into(), name.into());
    let condition = required(map, "condition", path)?;
    route.condition =
        MessageField::some(request_match(ctx, condition, &key_path(path, "condition"))?);
    let classes_path = key_path(path, "responseClasses");
    for (i, class) in optional_seq(map, "responseClasses", path)?
        .iter()
        .enumerate()
    {
        let class = response_class(ctx, class, &index_path(&classes_path, i))?;
        route.response_classes.push(class);
    }
    if let Some(v) = get(map, "isRetryable") {
        route.is_retryable = boolean(v, &key_path(path, "isRetryable"))?;
    }
    if let Some(v) = get(map, "timeout") {
        route.timeout = pb_duration(go_duration(v, &key_path(path, "timeout"))?);
    }
    Ok(route)
}

fn req(m: request_match::Match) -> RequestMatch {
    RequestMatch {
        match_: Some(m),
        ..Default::default()
    }
}

fn request_match(ctx: &Ctx, v: &Yaml, path: &str) -> Field<RequestMatch> {
    use request_match::Match;
    let map = mapping(v, path)?;
    ctx.warn_unknown(map, path, &["all", "any", "method", "not", "pathRegex"]);
    let mut parts = Vec::new();
    if let Some(all) = get(map, "all") {
        parts.push(req(Match::All(request_seq(
            ctx,
            all,
            &key_path(path, "all"),
        )?)));
    }
    if let Some(any) = get(map, "any") {
        parts.push(req(Match::Any(request_seq(
            ctx,
            any,
            &key_path(path, "any"),
        )?)));
    }
    if let Some(method) = get(map, "method") {
        let method_path = key_path(path, "method");
        let method = string(method, &method_path)?;
        if !method.is_empty() {
            if Method::from_token(method).is_none() {
                return fail(
                    &method_path,
                    format!(
                        "{method:?} is not an HTTP method (expected a token such as GET or \
                         PURGE: letters, digits and !#$%&'*+-.^_`|~)"
                    ),
                );
            }
            parts.push(req(Match::Method(http_method(method))));
        }
    }
    if let Some(not) = get(map, "not") {
        let not_path = key_path(path, "not");
        let inner = match not {
            Yaml::Array(_) => {
                let mut seq = request_seq(ctx, not, &not_path)?;
                match seq.matches.len() {
                    0 => return fail(&not_path, "empty list (expected one condition)"),
                    1 => seq.matches.remove(0),
                    _ => req(Match::Any(seq)),
                }
            }
            other => request_match(ctx, other, &not_path)?,
        };
        parts.push(req(Match::Not(Box::new(inner))));
    }
    if let Some(regex) = get(map, "pathRegex") {
        let regex_path = key_path(path, "pathRegex");
        let regex = string(regex, &regex_path)?;
        if !regex.is_empty() {
            // Compiled (and thrown away) only to check it: the proxy compiles it again.
            if let Err(e) = crate::profile::RequestMatch::path(regex) {
                return fail(
                    &regex_path,
                    format!(
                        "{regex:?} does not compile as a regex of the whole path: {}",
                        regex_reason(&e)
                    ),
                );
            }
            let mut pm = PathMatch::new();
            pm.regex = regex.to_string();
            parts.push(req(Match::Path(pm)));
        }
    }
    match parts.len() {
        0 => fail(
            path,
            "no condition set (expected one of all, any, method, not, pathRegex)",
        ),
        1 => Ok(parts.remove(0)),
        _ => {
            let mut seq = request_match::Seq::new();
            seq.matches = parts;
            Ok(req(Match::All(seq)))
        }
    }
}

fn request_seq(ctx: &Ctx, v: &Yaml, path: &str) -> Field<request_match::Seq> {
    let mut seq = request_match::Seq::new();
    for (i, item) in sequence(v, path)?.iter().enumerate() {
        seq.matches
            .push(request_match(ctx, item, &index_path(path, i))?);
    }
    Ok(seq)
}

fn http_method(name: &str) -> HttpMethod {
    use http_method::Registered;
    let mut m = HttpMethod::new();
    let registered = match name {
        "GET" => Registered::GET,
        "POST" => Registered::POST,
        "PUT" => Registered::PUT,
        "DELETE" => Registered::DELETE,
        "PATCH" => Registered::PATCH,
        "OPTIONS" => Registered::OPTIONS,
        "CONNECT" => Registered::CONNECT,
        "HEAD" => Registered::HEAD,
        "TRACE" => Registered::TRACE,
        other => {
            m.set_unregistered(other.to_string());
            return m;
        }
    };
    m.set_registered(registered);
    m
}

fn response_class(ctx: &Ctx, v: &Yaml, path: &str) -> Field<ResponseClass> {
    let map = mapping(v, path)?;
    ctx.warn_unknown(map, path, &["condition", "isFailure"]);
    let mut class = ResponseClass::new();
    let condition = required(map, "condition", path)?;
    class.condition = MessageField::some(response_match(
        ctx,
        condition,
        &key_path(path, "condition"),
    )?);
    if let Some(v) = get(map, "isFailure") {
        class.is_failure = boolean(v, &key_path(path, "isFailure"))?;
    }
    Ok(class)
}

fn resp(m: response_match::Match) -> ResponseMatch {
    ResponseMatch {
        match_: Some(m),
        ..Default::default()
    }
}

fn response_match(ctx: &Ctx, v: &Yaml, path: &str) -> Field<ResponseMatch> {
    use response_match::Match;
    let map = mapping(v, path)?;
    ctx.warn_unknown(map, path, &["all", "any", "status", "not"]);
    let mut parts = Vec::new();
    if let Some(all) = get(map, "all") {
        parts.push(resp(Match::All(response_seq(
            ctx,
            all,
            &key_path(path, "all"),
        )?)));
    }
    if let Some(any) = get(map, "any") {
        parts.push(resp(Match::Any(response_seq(
            ctx,
            any,
            &key_path(path, "any"),
        )?)));
    }
    if let Some(status) = get(map, "status") {
        parts.push(resp(Match::Status(status_range(
            ctx,
            status,
            &key_path(path, "status"),
        )?)));
    }
    if let Some(not) = get(map, "not") {
        let not_path = key_path(path, "not");
        let inner = match not {
            Yaml::Array(_) => {
                let mut seq = response_seq(ctx, not, &not_path)?;
                match seq.matches.len() {
                    0 => return fail(&not_path, "empty list (expected one condition)"),
                    1 => seq.matches.remove(0),
                    _ => resp(Match::Any(seq)),
                }
            }
            other => response_match(ctx, other, &not_path)?,
        };
        parts.push(resp(Match::Not(Box::new(inner))));
    }
    match parts.len() {
        0 => fail(
            path,
            "no condition set (expected one of all, any, status, not)",
        ),
        1 => Ok(parts.remove(0)),
        _ => {
            let mut seq = response_match::Seq::new();
            seq.matches = parts;
            Ok(resp(Match::All(seq)))
        }
    }
}

fn response_seq(ctx: &Ctx, v: &Yaml, path: &str) -> Field<response_match::Seq> {
    let mut seq = response_match::Seq::new();
    for (i, item) in sequence(v, path)?.iter().enumerate() {
        seq.matches
            .push(response_match(ctx, item, &index_path(path, i))?);
    }
    Ok(seq)
}

fn status_range(ctx: &Ctx, v: &Yaml, path: &str) -> Field<HttpStatusRange> {
    let map = mapping(v, path)?;
    ctx.warn_unknown(map, path, &["min", "max"]);
    let code = |key: &str| -> Field<Option<u32>> {
        let key_path = key_path(path, key);
        match get(map, key).map(|v| integer(v, &key_path)).transpose()? {
            None => Ok(None),
            Some(n @ 100..=599) => Ok(Some(n as u32)),
            Some(n) => fail(&key_path, format!("status code {n} is outside 100-599")),
        }
    };
    // Linkerd's controller would send the missing bound as 0, which linkerd2-proxy cannot
    // apply (it drops the class); reading it as one code would be a guess.
    let one_bound = |given: &str, code: u32| {
        fail(
            path,
            format!(
                "only {given} is given: both min and max are required \
                 (for one code write min: {code}, max: {code})"
            ),
        )
    };
    let (min, max) = match (code("min")?, code("max")?) {
        (Some(min), Some(max)) if min > max => {
            return fail(path, format!("min {min} is greater than max {max}"))
        }
        (Some(min), Some(max)) => (min, max),
        (Some(min), None) => return one_bound("min", min),
        (None, Some(max)) => return one_bound("max", max),
        (None, None) => return fail(path, "expected min and max"),
    };
    let mut range = HttpStatusRange::new();
    range.min = min;
    range.max = max;
    Ok(range)
}

fn retry_budget(ctx: &Ctx, v: &Yaml, path: &str) -> Field<RetryBudget> {
    let map = mapping(v, path)?;
    ctx.warn_unknown(map, path, &["retryRatio", "minRetriesPerSecond", "ttl"]);
    let mut budget = RetryBudget::new();
    let ratio_path = key_path(path, "retryRatio");
    budget.retry_ratio = match required(map, "retryRatio", path)? {
        Yaml::Integer(n) => *n as f32,
        real @ Yaml::Real(_) => match real.as_f64() {
            Some(f) => f as f32,
            None => return fail(&ratio_path, "not a number"),
        },
        other => {
            let found = kind_of(other);
            return fail(&ratio_path, format!("expected a number, found {found}"));
        }
    };
    let min_path = key_path(path, "minRetriesPerSecond");
    let min = integer(required(map, "minRetriesPerSecond", path)?, &min_path)?;
    budget.min_retries_per_second = match u32::try_from(min) {
        Ok(n) => n,
        Err(_) => return fail(&min_path, format!("{min} is outside 0-4294967295")),
    };
    let ttl = go_duration(required(map, "ttl", path)?, &key_path(path, "ttl"))?;
    budget.ttl = pb_duration(ttl);
    Ok(budget)
}

/// One `opaquePorts` entry: a port (integer or string) or a `"lo-hi"` range of them.
fn opaque_port(v: &Yaml, path: &str) -> Field<Vec<u16>> {
    let port = |n: i64| -> Field<u16> {
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(p),
            _ => fail(path, format!("port {n} is outside 1-65535")),
        }
    };
    let number = |s: &str| -> Field<u16> {
        match s.trim().parse::<i64>() {
            Ok(n) => port(n),
            Err(_) => fail(
                path,
                format!("expected a port or a range like \"4000-4010\", found {s:?}"),
            ),
        }
    };
    match v {
        Yaml::Integer(n) => Ok(vec![port(*n)?]),
        Yaml::String(s) => match s.split_once('-') {
            None => Ok(vec![number(s)?]),
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return fail(path, format!("empty range {s:?}"));
                }
                Ok((lo..=hi).collect())
            }
        },
        other => fail(
            path,
            format!("expected a port number or string, found {}", kind_of(other)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::destination::WeightedDst;
    use std::collections::HashMap;

    // The parsing helpers are shared with the parent module's tests.
    use super::super::tests::{error, mesh, profile, sp};

    /// A profile `p.s` with one route `r` whose condition is `condition` (flow or block YAML
    /// indented for `    condition:`).
    fn one_route(condition: &str) -> String {
        sp(
            "p.s",
            &format!("  routes:\n  - name: r\n    condition:{condition}"),
        )
    }

    fn condition(text: &str) -> RequestMatch {
        let p = profile(&mesh(text), "p.s:80");
        p.routes[0].condition.clone().unwrap()
    }

    /// The condition of the first response class of route `r` of `p.s`.
    fn classes(class_condition: &str) -> String {
        one_route(&format!(
            " {{method: GET}}\n    responseClasses:\n    - condition: {class_condition}\n"
        ))
    }

    fn first_class(text: &str) -> ResponseMatch {
        let p = profile(&mesh(text), "p.s:80");
        p.routes[0].response_classes[0].condition.clone().unwrap()
    }

    fn method(name: &str) -> RequestMatch {
        req(request_match::Match::Method(http_method(name)))
    }

    fn path_regex(regex: &str) -> RequestMatch {
        let mut pm = PathMatch::new();
        pm.regex = regex.into();
        req(request_match::Match::Path(pm))
    }

    fn seq(matches: Vec<RequestMatch>) -> request_match::Seq {
        let mut seq = request_match::Seq::new();
        seq.matches = matches;
        seq
    }

    fn all(matches: Vec<RequestMatch>) -> RequestMatch {
        req(request_match::Match::All(seq(matches)))
    }

    fn not(inner: RequestMatch) -> RequestMatch {
        req(request_match::Match::Not(Box::new(inner)))
    }

    fn status(min: u32, max: u32) -> ResponseMatch {
        let mut range = HttpStatusRange::new();
        range.min = min;
        range.max = max;
        resp(response_match::Match::Status(range))
    }

    fn pb(seconds: i64, nanos: i32) -> MessageField<PbDuration> {
        let mut d = PbDuration::new();
        d.seconds = seconds;
        d.nanos = nanos;
        MessageField::some(d)
    }

    fn budget(ratio: f32, min: u32, ttl_secs: i64) -> MessageField<RetryBudget> {
        let mut b = RetryBudget::new();
        b.retry_ratio = ratio;
        b.min_retries_per_second = min;
        b.ttl = pb(ttl_secs, 0);
        MessageField::some(b)
    }

    pub(super) fn dst(authority: &str, weight: u32) -> WeightedDst {
        let mut d = WeightedDst::new();
        d.authority = authority.into();
        d.weight = weight;
        d
    }

    /// The example of `shared/reference/serviceprofile-format.md`, as users write it.
    const REFERENCE_EXAMPLE: &str = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
  namespace: default
spec:
  routes:
  - name: GET /books/{id}
    condition:
      method: GET
      pathRegex: /books/[^/]*
    responseClasses:
    - condition:
        status:
          min: 500
          max: 599
      isFailure: true
    isRetryable: true
    timeout: 250ms
  - name: POST /books
    condition:
      all:
      - method: POST
      - pathRegex: /books
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
  dstOverrides:
  - authority: books-v1.default.svc.cluster.local:7000
    weight: 900m
  - authority: books-v2.default.svc.cluster.local:7000
    weight: 100m
"#;

    #[test]
    fn reference_example_converts_to_exact_proto() {
        let mut first = Route::new();
        first.condition = MessageField::some(all(vec![method("GET"), path_regex("/books/[^/]*")]));
        let mut class = ResponseClass::new();
        class.condition = MessageField::some(status(500, 599));
        class.is_failure = true;
        first.response_classes = vec![class];
        first.metrics_labels = HashMap::from([("route".into(), "GET /books/{id}".into())]);
        first.is_retryable = true;
        first.timeout = pb(0, 250_000_000);
        let mut second = Route::new();
        second.condition = MessageField::some(all(vec![method("POST"), path_regex("/books")]));
        second.metrics_labels = HashMap::from([("route".into(), "POST /books".into())]);
        let mut want = DestinationProfile::new();
        want.fully_qualified_name = "books.default.svc.cluster.local".into();
        want.routes = vec![first, second];
        want.retry_budget = budget(0.2, 10, 10);
        want.dst_overrides = vec![
            dst("books-v1.default.svc.cluster.local:7000", 9_000),
            dst("books-v2.default.svc.cluster.local:7000", 1_000),
        ];
        let m = mesh(REFERENCE_EXAMPLE);
        assert_eq!(profile(&m, "books.default.svc.cluster.local:7000"), want);
    }

    #[test]
    fn not_as_object_and_as_list() {
        assert_eq!(
            condition(&one_route("\n      not:\n        method: GET\n")),
            not(method("GET"))
        );
        assert_eq!(
            condition(&one_route("\n      not:\n      - method: GET\n")),
            not(method("GET"))
        );
        let several = one_route("\n      not:\n      - method: GET\n      - pathRegex: /x\n");
        let any = req(request_match::Match::Any(seq(vec![
            method("GET"),
            path_regex("/x"),
        ])));
        assert_eq!(condition(&several), not(any));
        assert!(
            error(&one_route(" {not: []}\n")).contains("spec.routes[0].condition.not: empty list")
        );

        let list = first_class(&classes("{not: [{status: {min: 200, max: 399}}]}"));
        let object = first_class(&classes("{not: {status: {min: 200, max: 399}}}"));
        let want = resp(response_match::Match::Not(Box::new(status(200, 399))));
        assert_eq!(list, want);
        assert_eq!(object, want);
    }

    #[test]
    fn conditions_keep_linkerds_order_and_need_a_key() {
        let text = one_route(" {pathRegex: /p, any: [], method: PURGE}\n");
        let any = req(request_match::Match::Any(seq(vec![])));
        assert_eq!(
            condition(&text),
            all(vec![any, method("PURGE"), path_regex("/p")])
        );
        let nested = one_route(" {all: [{any: [{method: GET}]}]}\n");
        let inner = req(request_match::Match::Any(seq(vec![method("GET")])));
        assert_eq!(condition(&nested), all(vec![inner]));

        assert!(error(&one_route(" {}\n")).contains("spec.routes[0].condition: no condition set"));
        assert!(error(&one_route(" {method: \"\"}\n")).contains("no condition set"));
        assert!(error(&one_route(" {all: [{}]}\n"))
            .contains("spec.routes[0].condition.all[0]: no condition set"));
        assert!(error(&one_route(" {method: [GET]}\n"))
            .contains("condition.method: expected a string, found a list"));
        assert!(error(&sp("p.s", "  routes:\n  - name: r\n"))
            .contains("spec.routes[0].condition: missing"));
        assert!(
            error(&sp("p.s", "  routes:\n  - condition: {method: GET}\n"))
                .contains("spec.routes[0].name: missing")
        );
    }

    #[test]
    fn methods_registered_or_not() {
        use http_method::Registered;
        for (name, want) in [
            ("GET", Registered::GET),
            ("POST", Registered::POST),
            ("PUT", Registered::PUT),
            ("DELETE", Registered::DELETE),
            ("PATCH", Registered::PATCH),
            ("OPTIONS", Registered::OPTIONS),
            ("CONNECT", Registered::CONNECT),
            ("HEAD", Registered::HEAD),
            ("TRACE", Registered::TRACE),
        ] {
            assert_eq!(http_method(name).registered(), want, "{name}");
        }
        for name in ["PURGE", "get"] {
            let m = http_method(name);
            assert!(m.has_unregistered(), "{name}");
            assert_eq!(m.unregistered(), name);
        }
    }

    #[test]
    fn status_ranges() {
        assert_eq!(
            first_class(&classes("{status: {min: 500, max: 599}}")),
            status(500, 599)
        );
        assert_eq!(
            first_class(&classes("{status: {min: 503, max: 503}}")),
            status(503, 503)
        );
        assert!(error(&classes("{status: {min: 600, max: 600}}"))
            .contains("status code 600 is outside"));
        assert!(error(&classes("{status: {min: 500, max: 400}}"))
            .contains("responseClasses[0].condition.status: min 500 is greater than max 400"));
        assert!(error(&classes("{status: {}}")).contains("expected min and max"));
        assert!(error(&classes("{status: {min: \"500\"}}"))
            .contains("status.min: expected an integer, found a string"));
        let both = first_class(&classes("{status: {min: 500, max: 500}, any: []}"));
        let mut seq = response_match::Seq::new();
        seq.matches = vec![
            resp(response_match::Match::Any(Default::default())),
            status(500, 500),
        ];
        assert_eq!(both, resp(response_match::Match::All(seq)));
    }

    #[test]
    fn a_status_range_with_one_bound_is_refused() {
        assert_eq!(
            error(&classes("{status: {min: 503}}")),
            "doc 1 (ServiceProfile p.s): spec.routes[0].responseClasses[0].condition.status: \
             only min is given: both min and max are required (for one code write min: 503, \
             max: 503)"
        );
        assert!(error(&classes("{any: [{status: {max: 404}}]}")).contains(
            "responseClasses[0].condition.any[0].status: only max is given: both min and max \
             are required (for one code write min: 404, max: 404)"
        ));
        assert!(error(&classes("{not: {status: {min: 500, max: null}}}"))
            .contains("condition.not.status: only min is given"));
    }

    #[test]
    fn a_path_regex_must_compile_as_the_proxy_compiles_it() {
        assert_eq!(
            error(&one_route(" {pathRegex: \"/books/(\"}\n")),
            "doc 1 (ServiceProfile p.s): spec.routes[0].condition.pathRegex: \"/books/(\" does \
             not compile as a regex of the whole path: unclosed group"
        );
        let nested = one_route(" {all: [{method: GET}, {not: [{pathRegex: \"([\"}]}]}\n");
        assert!(error(&nested)
            .contains("spec.routes[0].condition.all[1].not[0].pathRegex: \"([\" does not compile"));
        // Unbalanced groups would escape the anchors, so the proxy refuses them.
        assert!(error(&one_route(" {pathRegex: \"/a)|(/b\"}\n"))
            .contains("pathRegex: \"/a)|(/b\" does not compile"));
        // Within the proxy's size limit, not only the regex crate's default one.
        assert!(
            error(&one_route(" {pathRegex: \"(?:\\\\p{L}{100}){100}\"}\n"))
                .contains("does not compile as a regex of the whole path: compiled regex exceeds")
        );
        // What compiles is sent exactly as written; anchors are the proxy's business.
        let written = one_route(" {pathRegex: \" ^/books/[0-9]+$\"}\n");
        assert_eq!(condition(&written), path_regex(" ^/books/[0-9]+$"));
    }

    #[test]
    fn a_method_must_be_an_http_token() {
        assert_eq!(
            error(&one_route(" {method: \"BAD METHOD\"}\n")),
            "doc 1 (ServiceProfile p.s): spec.routes[0].condition.method: \"BAD METHOD\" is not \
             an HTTP method (expected a token such as GET or PURGE: letters, digits and \
             !#$%&'*+-.^_`|~)"
        );
        assert!(error(&one_route(" {any: [{method: \"GET/\"}]}\n"))
            .contains("condition.any[0].method: \"GET/\" is not an HTTP method"));
    }

    #[test]
    fn timeouts_and_budgets() {
        let p = profile(
            &mesh(&one_route(" {method: GET}\n    timeout: 1.5s\n")),
            "p.s:1",
        );
        assert_eq!(p.routes[0].timeout, pb(1, 500_000_000));
        assert_eq!(p.retry_budget, budget(0.2, 10, 10), "default budget");
        let zero = profile(
            &mesh(&one_route(" {method: GET}\n    timeout: 0s\n")),
            "p.s:1",
        );
        assert!(zero.routes[0].timeout.is_none());

        let own = sp(
            "p.s",
            "  retryBudget: {retryRatio: 1, minRetriesPerSecond: 3, ttl: 1m30s}\n",
        );
        assert_eq!(
            profile(&mesh(&own), "p.s:1").retry_budget,
            budget(1.0, 3, 90)
        );
        let ratio = sp(
            "p.s",
            "  retryBudget: {retryRatio: lots, minRetriesPerSecond: 1, ttl: 1s}\n",
        );
        assert!(error(&ratio)
            .contains("spec.retryBudget.retryRatio: expected a number, found a string"));
        let no_ttl = sp(
            "p.s",
            "  retryBudget: {retryRatio: 1, minRetriesPerSecond: 1}\n",
        );
        assert!(error(&no_ttl).contains("spec.retryBudget.ttl: missing"));
        let ttl = sp(
            "p.s",
            "  retryBudget: {retryRatio: 1, minRetriesPerSecond: 1, ttl: 10}\n",
        );
        assert!(error(&ttl).contains("spec.retryBudget.ttl: invalid duration \"10\": missing unit"));
        let negative = sp(
            "p.s",
            "  retryBudget: {retryRatio: 1, minRetriesPerSecond: -1, ttl: 1s}\n",
        );
        assert!(error(&negative).contains("minRetriesPerSecond: -1 is outside"));
        let retryable = one_route(" {method: GET}\n    isRetryable: \"yes\"\n");
        assert_eq!(
            error(&retryable),
            "doc 1 (ServiceProfile p.s): spec.routes[0].isRetryable: \
             expected true or false, found a string"
        );
    }

    #[test]
    fn opaque_ports_mark_the_profile_per_port() {
        let m = mesh(&sp(
            "db.s",
            "  opaquePorts:\n  - \"3306\"\n  - 5432\n  - \"4000-4002\"\n",
        ));
        for port in [3306, 5432, 4000, 4001, 4002] {
            assert!(
                profile(&m, &format!("db.s:{port}")).opaque_protocol,
                "{port}"
            );
        }
        for port in [80, 3999, 4003] {
            assert!(
                !profile(&m, &format!("db.s:{port}")).opaque_protocol,
                "{port}"
            );
        }
        assert!(error(&sp("db.s", "  opaquePorts: [\"0\"]\n")).contains("port 0 is outside"));
        assert!(error(&sp("db.s", "  opaquePorts: [70000]\n")).contains("port 70000 is outside"));
        assert!(error(&sp("db.s", "  opaquePorts: [\"9-1\"]\n")).contains("empty range"));
        assert!(error(&sp("db.s", "  opaquePorts: [\"http\"]\n"))
            .contains("spec.opaquePorts[0]: expected a port"));
        assert!(error(&sp("db.s", "  opaquePorts: [true]\n")).contains("found a boolean"));
    }

    #[test]
    fn unknown_spec_fields_are_ignored() {
        // `routez` is a typo: warned about and ignored, not fatal.
        let p = profile(&mesh(&sp("p.s", "  routez: []\n")), "p.s:1");
        assert!(p.routes.is_empty());
    }
}
