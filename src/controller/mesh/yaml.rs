//! Typed reads from a yaml-rust2 tree for `controller::mesh`, each failure carrying the field
//! path (`spec.routes[1].timeout`) so the parent can name the document and object too.
//!
//! Pure; runs on the controller thread that parses the file. The document walk lives in
//! `controller/mesh.rs`, the ServiceProfile conversion in `controller/mesh/profile.rs`.
//!
//! Types are strict (a string where a string is due, `true`/`false` for booleans), except that
//! an explicit `null` (or a key with nothing after it) counts as absent.

use std::time::Duration;

use yaml_rust2::yaml::Hash;
use yaml_rust2::Yaml;

use super::{Location, MeshError};
use crate::duration;

/// A problem at a field path inside one object, before the object's location is attached.
#[derive(Debug)]
pub(super) struct FieldError {
    pub(super) path: String,
    pub(super) message: String,
}

pub(super) type Field<T> = Result<T, FieldError>;

pub(super) fn fail<T>(path: &str, message: impl Into<String>) -> Field<T> {
    Err(FieldError {
        path: path.to_string(),
        message: message.into(),
    })
}

pub(super) fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The object being read, for errors and warnings: `doc 2 (ServiceProfile books...)`.
pub(super) struct Ctx {
    pub(super) at: Location,
    /// Kind and name, e.g. `ServiceProfile books.default.svc.cluster.local`.
    pub(super) object: String,
}

impl Ctx {
    pub(super) fn invalid(&self, e: FieldError) -> MeshError {
        MeshError::Invalid {
            at: self.at,
            object: self.object.clone(),
            path: e.path,
            message: e.message,
        }
    }

    /// Warns about keys of `map` that are not in `known`: likely typos. They are ignored, as
    /// the Kubernetes API server prunes unknown fields, rather than failing the file.
    pub(super) fn warn_unknown(&self, map: &Hash, path: &str, known: &[&str]) {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => log::warn!(
                    "{} ({}): {}: unknown field ignored",
                    self.at,
                    self.object,
                    key_path(path, k)
                ),
                None => log::warn!(
                    "{} ({}): {}: non-string key {key:?} ignored",
                    self.at,
                    self.object,
                    if path.is_empty() { "." } else { path },
                ),
            }
        }
    }
}

/// The value of `key`, treating an explicit `null` (or `key:` with nothing) as absent.
pub(super) fn get<'a>(map: &'a Hash, key: &str) -> Option<&'a Yaml> {
    match map.get(&Yaml::String(key.to_string())) {
        None | Some(Yaml::Null) => None,
        Some(v) => Some(v),
    }
}

pub(super) fn required<'a>(map: &'a Hash, key: &str, path: &str) -> Field<&'a Yaml> {
    match get(map, key) {
        Some(v) => Ok(v),
        None => fail(&key_path(path, key), "missing"),
    }
}

/// The list under `key`; empty when the key is absent.
pub(super) fn optional_seq<'a>(map: &'a Hash, key: &str, path: &str) -> Field<&'a [Yaml]> {
    match get(map, key) {
        Some(v) => sequence(v, &key_path(path, key)),
        None => Ok(&[]),
    }
}

pub(super) fn mapping<'a>(v: &'a Yaml, path: &str) -> Field<&'a Hash> {
    match v {
        Yaml::Hash(map) => Ok(map),
        other => fail(
            path,
            format!("expected a mapping, found {}", kind_of(other)),
        ),
    }
}

pub(super) fn sequence<'a>(v: &'a Yaml, path: &str) -> Field<&'a [Yaml]> {
    match v {
        Yaml::Array(items) => Ok(items),
        other => fail(path, format!("expected a list, found {}", kind_of(other))),
    }
}

pub(super) fn string<'a>(v: &'a Yaml, path: &str) -> Field<&'a str> {
    match v {
        Yaml::String(s) => Ok(s),
        other => fail(path, format!("expected a string, found {}", kind_of(other))),
    }
}

pub(super) fn boolean(v: &Yaml, path: &str) -> Field<bool> {
    match v {
        Yaml::Boolean(b) => Ok(*b),
        other => fail(
            path,
            format!("expected true or false, found {}", kind_of(other)),
        ),
    }
}

pub(super) fn integer(v: &Yaml, path: &str) -> Field<i64> {
    match v {
        Yaml::Integer(n) => Ok(*n),
        other => fail(
            path,
            format!("expected an integer, found {}", kind_of(other)),
        ),
    }
}

/// A Go duration string. A bare YAML integer is read as its digits, so `0` works and `5`
/// gets the usual "missing unit" message.
pub(super) fn go_duration(v: &Yaml, path: &str) -> Field<Duration> {
    let text = match v {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        other => {
            return fail(
                path,
                format!(
                    "expected a duration string like \"250ms\", found {}",
                    kind_of(other)
                ),
            )
        }
    };
    duration::parse(&text).or_else(|e| fail(path, e.to_string()))
}

/// How a value is named in "expected ..., found ..." messages.
pub(super) fn kind_of(v: &Yaml) -> &'static str {
    match v {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "an invalid value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::YamlLoader;

    fn doc(text: &str) -> Hash {
        let docs = YamlLoader::load_from_str(text).expect("test YAML");
        docs[0].as_hash().expect("a mapping").clone()
    }

    fn message<T: std::fmt::Debug>(r: Field<T>) -> String {
        let e = r.expect_err("should fail");
        format!("{}: {}", e.path, e.message)
    }

    #[test]
    fn null_counts_as_absent() {
        let map = doc("a: null\nb:\nc: 1\n");
        assert!(get(&map, "a").is_none());
        assert!(get(&map, "b").is_none());
        assert_eq!(get(&map, "c"), Some(&Yaml::Integer(1)));
        assert_eq!(message(required(&map, "a", "spec")), "spec.a: missing");
        assert_eq!(
            optional_seq(&map, "b", "spec").map(<[Yaml]>::len).ok(),
            Some(0)
        );
    }

    #[test]
    fn type_errors_name_path_and_types() {
        let map = doc("s: text\nn: 3\nr: 1.5\nb: true\nl: [1]\nm: {k: v}\n");
        let v = |k: &str| get(&map, k).expect("present");
        assert_eq!(
            message(string(v("n"), "x.n")),
            "x.n: expected a string, found an integer"
        );
        assert_eq!(
            message(integer(v("r"), "x.r")),
            "x.r: expected an integer, found a number"
        );
        assert_eq!(
            message(boolean(v("s"), "x.s")),
            "x.s: expected true or false, found a string"
        );
        assert_eq!(
            message(sequence(v("m"), "x.m")),
            "x.m: expected a list, found a mapping"
        );
        assert_eq!(
            message(mapping(v("l"), "x.l")),
            "x.l: expected a mapping, found a list"
        );
        assert_eq!(
            message(string(v("b"), "x.b")),
            "x.b: expected a string, found a boolean"
        );
    }

    #[test]
    fn durations_from_strings_and_zero() {
        let map = doc("a: 1m30s\nb: 0\nc: 5\nd: [1s]\n");
        let v = |k: &str| get(&map, k).expect("present");
        assert_eq!(go_duration(v("a"), "a").ok(), Some(Duration::from_secs(90)));
        assert_eq!(go_duration(v("b"), "b").ok(), Some(Duration::ZERO));
        assert!(message(go_duration(v("c"), "c"))
            .starts_with("c: invalid duration \"5\": missing unit"));
        assert!(message(go_duration(v("d"), "d")).contains("found a list"));
    }

    #[test]
    fn paths_compose() {
        assert_eq!(key_path("", "spec"), "spec");
        assert_eq!(
            key_path(&index_path("spec.routes", 2), "timeout"),
            "spec.routes[2].timeout"
        );
    }
}
