//! `kind: Identity` documents of the embedded controller's file: which token
//! proves which workload identity (pure; parsed on the controller thread that
//! parses the file, read by the `Certify` handler in `controller::identity`).
//!
//! ```yaml
//! apiVersion: spoke.dev/v1alpha1
//! kind: Identity
//! metadata:
//!   name: web.default.serviceaccount.identity.linkerd.cluster.local   # the identity
//! spec:
//!   tokenFile: /var/run/spoke/web.token   # read at each request (relative to the working directory)
//!   # or, inline:
//!   # token: "s3cret"
//! ```
//!
//! Exactly one of `token` and `tokenFile`. An identity no document names is
//! never issued. Linkerd checks a Kubernetes ServiceAccount token with a
//! TokenReview instead; spoke compares the bytes (a trailing newline in the
//! file or in the request is ignored).

use std::path::PathBuf;

use yaml_rust2::Yaml;

use super::yaml::{fail, get, mapping, required, string, Ctx, Field};
use super::{Builder, Location, Mesh, MeshError};
use crate::identity::config::check_dns_name;

pub(super) const KIND: &str = "Identity";

/// Where the token proving an identity is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Value(Vec<u8>),
    File(PathBuf),
}

impl Mesh {
    /// The token source for `identity`, when the file names it.
    pub fn identity_token(&self, identity: &str) -> Option<&TokenSource> {
        self.identities.get(&identity.to_ascii_lowercase())
    }

    /// Number of identities the file allows.
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }
}

impl Builder {
    pub(super) fn identity(
        &mut self,
        at: Location,
        ctx: Ctx,
        name: Option<&str>,
        spec: &Yaml,
    ) -> Result<(), MeshError> {
        let name = match name {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                return Err(ctx.invalid(super::yaml::FieldError {
                    path: "metadata.name".into(),
                    message: "missing".into(),
                }))
            }
        };
        check_dns_name(&name).map_err(|m| {
            ctx.invalid(super::yaml::FieldError {
                path: "metadata.name".into(),
                message: m,
            })
        })?;
        let source = token_source(&ctx, spec).map_err(|e| ctx.invalid(e))?;
        if let Some(first) = self.identity_origin.get(&name) {
            return Err(MeshError::Duplicate {
                at,
                object: ctx.object,
                first: *first,
            });
        }
        self.identity_origin.insert(name.clone(), at);
        self.mesh.identities.insert(name, source);
        Ok(())
    }
}

fn token_source(ctx: &Ctx, spec: &Yaml) -> Field<TokenSource> {
    let map = mapping(spec, "spec")?;
    ctx.warn_unknown(map, "spec", &["token", "tokenFile"]);
    match (get(map, "token"), get(map, "tokenFile")) {
        (Some(t), None) => {
            let t = string(t, "spec.token")?;
            if t.is_empty() {
                return fail("spec.token", "empty");
            }
            Ok(TokenSource::Value(t.as_bytes().to_vec()))
        }
        (None, Some(_)) => {
            let p = string(required(map, "tokenFile", "spec")?, "spec.tokenFile")?;
            if p.is_empty() {
                return fail("spec.tokenFile", "empty");
            }
            Ok(TokenSource::File(PathBuf::from(p)))
        }
        (Some(_), Some(_)) => fail("spec", "token and tokenFile are exclusive"),
        (None, None) => fail("spec", "token or tokenFile is required"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

    fn doc(spec: &str) -> String {
        format!("apiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {NAME}}}\nspec: {spec}\n")
    }

    #[test]
    fn identities_map_to_a_token_or_a_file() {
        let text = format!(
            "{}---\n{}",
            doc("{token: s3cret}"),
            doc("{tokenFile: /t}").replace("web.", "db.")
        );
        let mesh = parse(&text).unwrap();
        assert_eq!(mesh.identity_count(), 2);
        assert_eq!(
            mesh.identity_token(&NAME.to_ascii_uppercase()),
            Some(&TokenSource::Value(b"s3cret".to_vec()))
        );
        let db = NAME.replace("web.", "db.");
        assert_eq!(
            mesh.identity_token(&db),
            Some(&TokenSource::File("/t".into()))
        );
        assert_eq!(mesh.identity_token("other.x"), None);
    }

    #[test]
    fn bad_identity_documents_are_refused_naming_the_field() {
        let e = |t: String| parse(&t).unwrap_err().to_string();
        assert!(e(doc("{}")).contains("spec: token or tokenFile is required"));
        assert!(e(doc("{token: a, tokenFile: b}")).contains("exclusive"));
        assert!(e(doc("{token: [1]}")).contains("spec.token: expected a string"));
        assert!(e(doc("{token: a}").replace(NAME, "bad name")).contains("metadata.name"));
        let twice = format!("{}---\n{}", doc("{token: a}"), doc("{token: b}"));
        assert!(
            e(twice).contains("duplicate"),
            "{}",
            e(doc("{token: a}") + "---\n" + &doc("{token: b}"))
        );
    }
}
