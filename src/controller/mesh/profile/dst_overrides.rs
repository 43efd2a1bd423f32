//! `spec.dstOverrides[]` of a ServiceProfile -> `WeightedDst`: the authority check and
//! the Kubernetes-quantity weights. Part of `controller/mesh/profile.rs` (the rest of the
//! spec); pure, run on the controller thread that parses the file.
//!
//! - `authority` must be `name:port`: a DNS name and a port 1-65535. linkerd2-proxy drops
//!   an override without a port and sends its share of the traffic elsewhere, so such a
//!   file is refused rather than served. It is sent as written (clients normalise it).
//! - `weight` is an integer or a Kubernetes quantity (`"500m"`, `"1"`, `"0.25"`, `"1k"`,
//!   `"1Ki"`, `"1e3"`), sent in units of 1/10,000 after rounding up to a thousandth, as
//!   Linkerd's `MilliValue() * 10` (`500m` -> 5,000, `1` -> 10,000).

use yaml_rust2::Yaml;

use super::super::yaml::{fail, key_path, kind_of, mapping, required, string, Ctx, Field};
use crate::profile::normalize_authority;
use crate::proto::destination::WeightedDst;

pub(super) fn weighted_dst(ctx: &Ctx, v: &Yaml, path: &str) -> Field<WeightedDst> {
    let map = mapping(v, path)?;
    ctx.warn_unknown(map, path, &["authority", "weight"]);
    let mut dst = WeightedDst::new();
    let authority_path = key_path(path, "authority");
    let authority = string(required(map, "authority", path)?, &authority_path)?;
    if authority.is_empty() {
        return fail(&authority_path, "empty");
    }
    dst_authority(authority).or_else(|why| fail(&authority_path, why))?;
    dst.authority = authority.to_string();
    let weight_path = key_path(path, "weight");
    let text = match required(map, "weight", path)? {
        Yaml::Integer(n) => n.to_string(),
        Yaml::Real(s) | Yaml::String(s) => s.clone(),
        other => {
            let found = kind_of(other);
            let message = format!("expected an integer or a quantity like \"500m\", found {found}");
            return fail(&weight_path, message);
        }
    };
    dst.weight = match quantity_decimillis(&text) {
        Ok(w) => w,
        Err(why) => return fail(&weight_path, format!("invalid weight {text:?}: {why}")),
    };
    Ok(dst)
}

/// Checks a `dstOverrides` authority: `name:port` with a DNS name and a port 1-65535, which
/// both spoke's client and linkerd2-proxy can resolve. (spoke's client would read a bare name
/// as port 80; linkerd2-proxy drops it, so the traffic silently goes elsewhere.)
fn dst_authority(authority: &str) -> Result<(), String> {
    let Some((name, port)) = authority.rsplit_once(':') else {
        return Err(format!(
            "{authority:?} has no port (expected name:port, e.g. \
             books-v2.default.svc.cluster.local:7000)"
        ));
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(port.parse::<u16>(), Ok(p) if p != 0);
    if !port_ok {
        return Err(format!(
            "{authority:?}: port {port:?} is not a number in 1-65535"
        ));
    }
    if normalize_authority(authority).is_none() {
        return Err(format!(
            "{authority:?}: {name:?} is not a DNS name (labels of letters, digits, - and _)"
        ));
    }
    Ok(())
}

/// A Kubernetes quantity in units of 1/10,000, rounded up to a thousandth first, as Linkerd's
/// `Quantity.MilliValue() * 10`. Accepts `<number><suffix>`: the number is decimal with an
/// optional fraction and an optional `+`; the suffix is empty, one of `n u m k M G T P E`,
/// one of `Ki Mi Gi Ti Pi Ei`, or an exponent `e<int>`/`E<int>`.
fn quantity_decimillis(text: &str) -> Result<u32, &'static str> {
    const TOO_LARGE: &str = "out of range (weights are sent as 32-bit counts of 1/10,000)";
    if text.starts_with('-') {
        return Err("weights cannot be negative");
    }
    let body = text.strip_prefix('+').unwrap_or(text);
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err("expected a number, e.g. 1, 0.25 or 500m");
    }
    if whole.len() + fraction.len() > 30 {
        return Err(TOO_LARGE);
    }
    // At most 30 digits, so the mantissa fits a u128 (max ~3.4e38).
    let mantissa = whole
        .bytes()
        .chain(fraction.bytes())
        .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
    let pow10 = |e: u32| 10u128.checked_pow(e).ok_or(TOO_LARGE);
    // The quantity is mantissa * num / (den * 10^fraction digits).
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, pow10(9)?),
        "u" => (1, pow10(6)?),
        "m" => (1, pow10(3)?),
        "k" => (pow10(3)?, 1),
        "M" => (pow10(6)?, 1),
        "G" => (pow10(9)?, 1),
        "T" => (pow10(12)?, 1),
        "P" => (pow10(15)?, 1),
        "E" => (pow10(18)?, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => match s[1..].parse::<i32>() {
            Ok(e) if e >= 0 => (pow10(e.unsigned_abs())?, 1),
            Ok(e) => (1, pow10(e.unsigned_abs())?),
            Err(_) => return Err("bad exponent"),
        },
        _ => return Err("unknown suffix (expected n, u, m, k, M, G, T, P, E, Ki-Ei or e<exp>)"),
    };
    let den = den
        .checked_mul(pow10(fraction.len() as u32)?)
        .ok_or(TOO_LARGE)?;
    let milli = mantissa
        .checked_mul(num)
        .and_then(|n| n.checked_mul(1000))
        .ok_or(TOO_LARGE)?
        .div_ceil(den);
    milli
        .checked_mul(10)
        .and_then(|d| u32::try_from(d).ok())
        .ok_or(TOO_LARGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::super::tests::{error, mesh, profile, sp};
    use super::super::tests::dst;

    #[test]
    fn quantities_in_decimillis() {
        for (text, want) in [
            ("1", 10_000),
            ("500m", 5_000),
            ("900m", 9_000),
            ("0.25", 2_500),
            ("1k", 10_000_000),
            ("1Ki", 10_240_000),
            ("1e2", 1_000_000),
            ("25e-2", 2_500),
            ("+2", 20_000),
            (".5", 5_000),
            ("0", 0),
            // Rounded up to a thousandth, like Linkerd's MilliValue().
            ("1u", 10),
            ("0.0001", 10),
            ("1500000u", 15_000),
        ] {
            assert_eq!(quantity_decimillis(text), Ok(want), "{text}");
        }
        for bad in [
            "-1",
            "",
            "m",
            "1x",
            "1.2.3",
            "1e",
            "1 k",
            "1000000000k",
            "1E",
            "1e-99",
        ] {
            assert!(quantity_decimillis(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn dst_overrides_take_integers_numbers_and_quantities() {
        let text = sp(
            "w.s",
            "  dstOverrides:\n  - {authority: a:80, weight: 3}\n  - {authority: b:80, weight: 0.5}\n  \
             - {authority: c:81, weight: \"250m\"}\n  - {authority: d:80, weight: 0}\n",
        );
        assert_eq!(
            profile(&mesh(&text), "w.s:80").dst_overrides,
            vec![
                dst("a:80", 30_000),
                dst("b:80", 5_000),
                dst("c:81", 2_500),
                dst("d:80", 0)
            ]
        );
        let negative = sp(
            "w.s",
            "  dstOverrides:\n  - {authority: a:80, weight: -1}\n",
        );
        assert!(error(&negative).contains("spec.dstOverrides[0].weight: invalid weight \"-1\""));
        let missing = sp("w.s", "  dstOverrides:\n  - {authority: a:80}\n");
        assert!(error(&missing).contains("spec.dstOverrides[0].weight: missing"));
        let boolean = sp(
            "w.s",
            "  dstOverrides:\n  - {authority: a:80, weight: true}\n",
        );
        assert!(error(&boolean).contains("found a boolean"));
    }

    #[test]
    fn a_dst_override_authority_must_be_name_and_port() {
        let with = |authority: &str| {
            sp(
                "w.s",
                &format!("  dstOverrides:\n  - {{authority: {authority:?}, weight: 1}}\n"),
            )
        };
        let kept = profile(
            &mesh(&with("Books-V2.default.svc.cluster.local.:7000")),
            "w.s:80",
        );
        // Sent as written: the client normalises it.
        assert_eq!(
            kept.dst_overrides,
            [dst("Books-V2.default.svc.cluster.local.:7000", 10_000)]
        );
        assert_eq!(
            error(&with("books-v2")),
            "doc 1 (ServiceProfile w.s): spec.dstOverrides[0].authority: \"books-v2\" has no \
             port (expected name:port, e.g. books-v2.default.svc.cluster.local:7000)"
        );
        for (bad, why) in [
            ("books:", "port \"\" is not a number in 1-65535"),
            ("books:0", "port \"0\" is not a number in 1-65535"),
            ("books:65536", "port \"65536\" is not a number in 1-65535"),
            ("books:+80", "port \"+80\" is not a number in 1-65535"),
            ("books:http", "port \"http\" is not a number in 1-65535"),
            (":80", "\"\" is not a DNS name"),
            ("bad name:80", "\"bad name\" is not a DNS name"),
            ("[::1]:80", "\"[::1]\" is not a DNS name"),
        ] {
            let message = error(&with(bad));
            assert!(
                message.contains(&format!("spec.dstOverrides[0].authority: {bad:?}: {why}")),
                "{bad}: {message}"
            );
        }
    }
}
