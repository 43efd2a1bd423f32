//! `spoke demo`: the main job on the embedded default, end to end in one
//! process. Starts two backends (threads), the embedded controller serving the
//! example file (with the backends' real addresses), and the proxy; sends a
//! bounded burst of traffic across several routes (one fails part of the
//! time, and is retried: the `attempts` column shows the retries); then reads
//! spoke's own `/metrics` and renders a per-route table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::{Config, ControlPlane};
use crate::devtools::{self, Backend, Client, Response};
use crate::metrics::{histogram_quantile, parse_text, Sample};

/// The addresses the example file gives the two services; the demo replaces
/// them with the ports its backends actually got.
const BOOKS_PLACEHOLDER: &str = "127.0.0.1:7001";
const AUTHORS_PLACEHOLDER: &str = "127.0.0.1:7002";
const BOOKS: &str = "books.default.svc.cluster.local:7000";
const AUTHORS: &str = "authors.default.svc.cluster.local:7000";

/// Runs the demo and returns the report to print.
pub fn run(base: &Config, requests: usize) -> Result<String, String> {
    let flaky = Arc::new(AtomicUsize::new(0));
    let f = flaky.clone();
    let books = Backend::start(
        "books",
        Arc::new(move |req| match req.path.as_str() {
            "/flaky" => {
                // Every fourth call fails.
                if f.fetch_add(1, Ordering::Relaxed) % 4 == 3 {
                    Response::new(500, "upstream hiccup\n")
                } else {
                    Response::new(200, "{\"ok\":true}\n")
                }
            }
            "/books" if req.method == "GET" => {
                Response::new(200, "[{\"id\":1},{\"id\":2}]\n").with_delay(Duration::from_millis(2))
            }
            "/books" => Response::new(201, "{\"id\":3}\n"),
            _ => Response::new(200, "{\"id\":1,\"title\":\"Dune\"}\n"),
        }),
    )
    .map_err(|e| format!("cannot start the books backend: {e}"))?;
    let authors = Backend::start(
        "authors",
        Arc::new(|_| Response::new(200, "{\"name\":\"Frank Herbert\"}\n")),
    )
    .map_err(|e| format!("cannot start the authors backend: {e}"))?;

    let source = match &base.control_plane {
        ControlPlane::Embedded(p) => p.clone(),
        ControlPlane::Remote(_) => PathBuf::from("examples/mesh.yaml"),
    };
    let text = std::fs::read_to_string(&source)
        .map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    let text = text
        .replace(BOOKS_PLACEHOLDER, &books.addr().to_string())
        .replace(AUTHORS_PLACEHOLDER, &authors.addr().to_string());
    let config_path = std::env::temp_dir().join(format!("spoke-demo-{}.yaml", std::process::id()));
    std::fs::write(&config_path, text)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

    let mut cfg = base.clone();
    cfg.control_plane = ControlPlane::Embedded(config_path.clone());
    cfg.outbound_listen = "127.0.0.1:0".parse().expect("literal address");
    cfg.admin_listen = "127.0.0.1:0".parse().expect("literal address");
    cfg.inbound_listen = "127.0.0.1:0".parse().expect("literal address");
    // The controller watches the file for the life of the demo.
    let _cleanup = RemoveOnDrop(config_path.clone());
    let app = App::start(&cfg).map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut client = Client::connect(app.outbound_addr(), Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to the proxy: {e}"))?;
    let mut sent = 0;
    let mut failures = 0;
    let plan: [(&str, &str, &str); 6] = [
        ("GET", BOOKS, "/books"),
        ("GET", BOOKS, "/books/{}"),
        ("POST", BOOKS, "/books"),
        ("GET", BOOKS, "/flaky"),
        ("GET", AUTHORS, "/authors/{}"),
        ("GET", BOOKS, "/healthz"),
    ];
    while sent < requests {
        let (method, host, path) = plan[sent % plan.len()];
        let path = path.replace("{}", &(sent % 97).to_string());
        let body: &[u8] = if method == "POST" {
            b"{\"title\":\"Emma\"}"
        } else {
            b""
        };
        match client.send(method, host, &path, &[], body) {
            Ok(r) if r.status < 500 => {}
            Ok(_) => failures += 1,
            Err(e) => return Err(format!("request {sent} failed: {e}")),
        }
        sent += 1;
    }
    let elapsed = started.elapsed();

    let metrics = devtools::get(app.admin_addr(), "localhost", "/metrics")
        .and_then(|reply| reply.payload())
        .map_err(|e| format!("cannot read /metrics: {e}"))?;
    let samples = parse_text(&String::from_utf8_lossy(&metrics));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spoke demo: {sent} requests through the proxy at {} in {:.2}s ({failures} answered 5xx)",
        app.outbound_addr(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "embedded controller serving {}; numbers below are read from spoke's own /metrics\n",
        source.display()
    );
    out.push_str(&route_table(&samples));
    app.shutdown()?;
    drop(books);
    drop(authors);
    Ok(out)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Per-route requests, success rate and latency quantiles from a scrape.
pub fn route_table(samples: &[Sample]) -> String {
    #[derive(Default)]
    struct Row {
        requests: f64,
        /// Tries sent upstream, retries included.
        attempts: f64,
        ok: f64,
        responses: f64,
    }
    let route_of = |s: &Sample| {
        (
            s.label("dst").unwrap_or("").to_string(),
            s.label("rt_route").unwrap_or("(default)").to_string(),
        )
    };
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for s in samples {
        match s.name.as_str() {
            "route_request_total" => rows.entry(route_of(s)).or_default().requests += s.value,
            "route_actual_request_total" => {
                rows.entry(route_of(s)).or_default().attempts += s.value
            }
            "route_response_total" => {
                let row = rows.entry(route_of(s)).or_default();
                row.responses += s.value;
                if s.label("classification") == Some("success") {
                    row.ok += s.value;
                }
            }
            _ => {}
        }
    }
    let mut out = format!(
        "{:<40} {:<18} {:>8} {:>8} {:>9} {:>8} {:>8}\n",
        "destination", "route", "requests", "attempts", "success", "p50 ms", "p99 ms"
    );
    for ((dst, route), row) in rows.iter().filter(|(_, r)| r.requests > 0.0) {
        let series: Vec<Sample> = samples
            .iter()
            .filter(|s| {
                s.name == "route_response_latency_ms_bucket"
                    && route_of(s) == (dst.clone(), route.clone())
            })
            .cloned()
            .collect();
        let q = |q: f64| {
            histogram_quantile(&series, "route_response_latency_ms", &[], q)
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into())
        };
        let success = if row.responses > 0.0 {
            format!("{:.1}%", 100.0 * row.ok / row.responses)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<40} {:<18} {:>8} {:>8} {:>9} {:>8} {:>8}",
            dst,
            route,
            row.requests,
            row.attempts,
            success,
            q(0.5),
            q(0.99)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_from_a_scrape() {
        let text = "\
route_request_total{direction=\"outbound\",dst=\"a:80\",rt_route=\"GET /x\"} 4
route_actual_request_total{direction=\"outbound\",dst=\"a:80\",rt_route=\"GET /x\"} 5
route_response_total{direction=\"outbound\",dst=\"a:80\",rt_route=\"GET /x\",status_code=\"200\",classification=\"success\"} 3
route_response_total{direction=\"outbound\",dst=\"a:80\",rt_route=\"GET /x\",status_code=\"500\",classification=\"failure\"} 1
route_response_latency_ms_bucket{direction=\"outbound\",dst=\"a:80\",rt_route=\"GET /x\",status_code=\"200\",le=\"1\"} 2
route_response_latency_ms_bucket{direction=\"outbound\",dst=\"a:80\",rt_route=\"GET /x\",status_code=\"200\",le=\"+Inf\"} 3
route_request_total{direction=\"outbound\",dst=\"a:80\"} 2
route_request_total{direction=\"outbound\",dst=\"b:80\"} 0
";
        let t = route_table(&parse_text(text));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("a:80") && lines[1].contains("(default)"),
            "{t}"
        );
        assert!(
            lines[2].contains("GET /x") && lines[2].contains("75.0%"),
            "{t}"
        );
        assert!(
            lines[2].contains(" 4        5 "),
            "requests then attempts: {t}"
        );
    }
}
