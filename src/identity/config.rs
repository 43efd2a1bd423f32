//! Identity settings from the environment (pure: reads variables only; the
//! files they name are read when the proxy or controller starts).
//!
//! The workload's identity uses Linkerd's variables
//! (`LINKERD2_PROXY_IDENTITY_*`); the embedded controller's CA uses
//! `SPOKE_CONTROLLER_IDENTITY_*`. Kept apart from `config.rs`, which calls
//! [`from_env`] once and stores the result in `Config::identity`.

use std::path::PathBuf;
use std::time::Duration;

use super::creds::Anchors;
use super::issuer::{IssuerSource, DEFAULT_LIFETIME};
use crate::config::{ConfigError, Env};
use crate::duration;

pub const IDENTITY_DIR: &str = "LINKERD2_PROXY_IDENTITY_DIR";
pub const TRUST_ANCHORS: &str = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS";
pub const TOKEN_FILE: &str = "LINKERD2_PROXY_IDENTITY_TOKEN_FILE";
pub const LOCAL_NAME: &str = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME";
pub const SVC_ADDR: &str = "LINKERD2_PROXY_IDENTITY_SVC_ADDR";
pub const SVC_NAME: &str = "LINKERD2_PROXY_IDENTITY_SVC_NAME";
pub const MIN_REFRESH: &str = "LINKERD2_PROXY_IDENTITY_MIN_REFRESH";
pub const MAX_REFRESH: &str = "LINKERD2_PROXY_IDENTITY_MAX_REFRESH";
pub const ISSUER_CERT: &str = "SPOKE_CONTROLLER_IDENTITY_ISSUER_CERT";
pub const ISSUER_KEY: &str = "SPOKE_CONTROLLER_IDENTITY_ISSUER_KEY";
pub const ISSUANCE_LIFETIME: &str = "SPOKE_CONTROLLER_IDENTITY_ISSUANCE_LIFETIME";
pub const TRUST_ANCHORS_OUT: &str = "SPOKE_CONTROLLER_IDENTITY_TRUST_ANCHORS_OUT";

/// Both halves: the proxy's own identity (when enabled) and the embedded
/// controller's CA.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentitySettings {
    /// `None`: identity is off (no local name and no anchors configured).
    pub proxy: Option<ProxyIdentity>,
    pub issuer: IssuerConfig,
}

/// Where the identity service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityService {
    /// `LINKERD2_PROXY_IDENTITY_SVC_ADDR`.
    Remote(String),
    /// The embedded controller, on its own address.
    Embedded,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProxyIdentity {
    pub local_name: String,
    pub anchors: Anchors,
    pub token_file: PathBuf,
    /// `key.p8` and `csr.der` are taken from here when present.
    pub dir: Option<PathBuf>,
    pub service: IdentityService,
    /// The service's identity: with a remote service, the connection to it
    /// is TLS and its server must prove this name.
    pub service_name: Option<String>,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// Certificate and key to load, when both are set.
    pub load: Option<(String, String)>,
    /// Where a generated CA's certificate is written.
    pub anchors_out: Option<PathBuf>,
    /// Lifetime of issued leaves.
    pub lifetime: Duration,
}

impl IssuerConfig {
    /// What the controller does: load the configured CA, else generate one
    /// when there is somewhere to write it (`default_out` when the variable
    /// is unset), else serve no identities.
    pub fn source(&self, default_out: Option<PathBuf>) -> Option<IssuerSource> {
        if let Some((cert, key)) = &self.load {
            return Some(IssuerSource::Load {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        self.anchors_out
            .clone()
            .or(default_out)
            .map(|anchors_out| IssuerSource::Generate { anchors_out })
    }
}

fn value(env: &dyn Env, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn dur(env: &dyn Env, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
    let v = value(env, var).unwrap_or_else(|| default.to_owned());
    match duration::parse(&v) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(invalid(var, &v, "must be greater than zero")),
        Err(e) => Err(invalid(var, &v, e.to_string())),
    }
}

/// A DNS-like identity: dot-separated labels of letters, digits and `-`.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(
            "expected a DNS name, e.g. web.default.serviceaccount.identity.linkerd.cluster.local"
                .into(),
        )
    }
}

/// Reads the identity variables. `embedded`: the control plane is the
/// embedded controller, which then serves `Certify` too.
pub fn from_env(env: &dyn Env, embedded: bool) -> Result<IdentitySettings, ConfigError> {
    let issuer = IssuerConfig {
        load: match (value(env, ISSUER_CERT), value(env, ISSUER_KEY)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    ISSUER_KEY,
                    "",
                    format!("required with {ISSUER_CERT}"),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    ISSUER_CERT,
                    "",
                    format!("required with {ISSUER_KEY}"),
                ))
            }
        },
        anchors_out: value(env, TRUST_ANCHORS_OUT).map(PathBuf::from),
        lifetime: match value(env, ISSUANCE_LIFETIME) {
            None => DEFAULT_LIFETIME,
            Some(_) => dur(env, ISSUANCE_LIFETIME, "24h")?,
        },
    };
    let local_name = value(env, LOCAL_NAME);
    let anchors = value(env, TRUST_ANCHORS);
    let (local_name, anchors) = match (local_name, anchors) {
        (None, None) => {
            return Ok(IdentitySettings {
                proxy: None,
                issuer,
            })
        }
        (Some(_), None) => {
            return Err(invalid(
                TRUST_ANCHORS,
                "",
                format!("required with {LOCAL_NAME}"),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                LOCAL_NAME,
                "",
                format!("required with {TRUST_ANCHORS}"),
            ))
        }
        (Some(n), Some(a)) => (n, a),
    };
    check_dns_name(&local_name).map_err(|r| invalid(LOCAL_NAME, &local_name, r))?;
    let shown: String = anchors.chars().take(40).collect();
    let anchors = Anchors::from_pem(&anchors).map_err(|r| invalid(TRUST_ANCHORS, &shown, r))?;
    let token_file = value(env, TOKEN_FILE)
        .map(PathBuf::from)
        .ok_or_else(|| invalid(TOKEN_FILE, "", "required when identity is enabled"))?;
    let service = match value(env, SVC_ADDR) {
        Some(addr) => {
            crate::config::validate_host_port(&addr).map_err(|r| invalid(SVC_ADDR, &addr, r))?;
            IdentityService::Remote(addr)
        }
        None if embedded => IdentityService::Embedded,
        None => {
            return Err(invalid(
                SVC_ADDR,
                "",
                "required when identity is enabled with a remote control plane",
            ))
        }
    };
    let service_name = value(env, SVC_NAME);
    if let Some(n) = &service_name {
        check_dns_name(n).map_err(|r| invalid(SVC_NAME, n, r))?;
    }
    let min_refresh = dur(env, MIN_REFRESH, "10s")?;
    let max_refresh = dur(env, MAX_REFRESH, "24h")?;
    if min_refresh > max_refresh {
        return Err(invalid(
            MIN_REFRESH,
            &duration::format(min_refresh),
            format!(
                "larger than {MAX_REFRESH} ({})",
                duration::format(max_refresh)
            ),
        ));
    }
    Ok(IdentitySettings {
        proxy: Some(ProxyIdentity {
            local_name: local_name.to_ascii_lowercase(),
            anchors,
            token_file,
            dir: value(env, IDENTITY_DIR).map(PathBuf::from),
            service,
            service_name,
            min_refresh,
            max_refresh,
        }),
        issuer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;
    use crate::identity::issuer::Issuer;

    const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

    fn enabled() -> MapEnv {
        MapEnv::new()
            .set(LOCAL_NAME, NAME)
            .set(TRUST_ANCHORS, Issuer::generate().unwrap().cert_pem())
            .set(TOKEN_FILE, "/var/run/token")
    }

    fn err(env: &MapEnv, embedded: bool) -> ConfigError {
        from_env(env, embedded).unwrap_err()
    }

    #[test]
    fn off_unless_configured_and_linkerd_defaults_otherwise() {
        let s = from_env(&MapEnv::new(), true).unwrap();
        assert!(s.proxy.is_none());
        assert_eq!(s.issuer.lifetime, DEFAULT_LIFETIME);
        assert_eq!(s.issuer.source(None), None);
        let p = from_env(&enabled(), true).unwrap().proxy.unwrap();
        assert_eq!(p.service, IdentityService::Embedded);
        assert_eq!(p.min_refresh, Duration::from_secs(10));
        assert_eq!(p.max_refresh, Duration::from_secs(86_400));
        assert_eq!(p.anchors.len(), 1);
        let p = from_env(&enabled().set(SVC_ADDR, "identity:8080"), false).unwrap();
        assert_eq!(
            p.proxy.unwrap().service,
            IdentityService::Remote("identity:8080".into())
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(
            err(&MapEnv::new().set(LOCAL_NAME, NAME), true).var,
            TRUST_ANCHORS
        );
        assert_eq!(
            err(&MapEnv::new().set(TRUST_ANCHORS, "x"), true).var,
            LOCAL_NAME
        );
        assert_eq!(
            err(&enabled().set(LOCAL_NAME, "no spaces"), true).var,
            LOCAL_NAME
        );
        assert_eq!(
            err(&enabled().set(TRUST_ANCHORS, "junk"), true).var,
            TRUST_ANCHORS
        );
        let mut no_token = enabled();
        no_token.0.remove(TOKEN_FILE);
        assert_eq!(err(&no_token, true).var, TOKEN_FILE);
        assert_eq!(err(&enabled(), false).var, SVC_ADDR);
        assert_eq!(err(&enabled().set(SVC_ADDR, "noport"), false).var, SVC_ADDR);
        assert_eq!(err(&enabled().set(SVC_NAME, "a..b"), true).var, SVC_NAME);
        assert_eq!(
            err(&enabled().set(MIN_REFRESH, "soon"), true).var,
            MIN_REFRESH
        );
        assert_eq!(
            err(&enabled().set(MAX_REFRESH, "0s"), true).var,
            MAX_REFRESH
        );
        let e = err(
            &enabled().set(MIN_REFRESH, "2h").set(MAX_REFRESH, "1h"),
            true,
        );
        assert_eq!(e.var, MIN_REFRESH);
        assert_eq!(
            err(&MapEnv::new().set(ISSUER_CERT, "c"), true).var,
            ISSUER_KEY
        );
        assert_eq!(
            err(&MapEnv::new().set(ISSUER_KEY, "k"), true).var,
            ISSUER_CERT
        );
        let e = err(&MapEnv::new().set(ISSUANCE_LIFETIME, "forever"), true);
        assert_eq!(e.var, ISSUANCE_LIFETIME);
    }

    #[test]
    fn the_issuer_loads_generates_or_stays_off() {
        let load = MapEnv::new()
            .set(ISSUER_CERT, "c.pem")
            .set(ISSUER_KEY, "k.pem");
        let s = from_env(&load, true).unwrap().issuer;
        assert_eq!(
            s.source(None),
            Some(IssuerSource::Load {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let out = MapEnv::new().set(TRUST_ANCHORS_OUT, "/tmp/a.pem");
        let s = from_env(&out, true).unwrap().issuer;
        assert_eq!(
            s.source(Some("/other".into())),
            Some(IssuerSource::Generate {
                anchors_out: "/tmp/a.pem".into()
            })
        );
        let s = from_env(&MapEnv::new(), true).unwrap().issuer;
        assert_eq!(
            s.source(Some("/other".into())),
            Some(IssuerSource::Generate {
                anchors_out: "/other".into()
            })
        );
    }
}
