//! The `spoke` binary: parses the command line, loads configuration from the
//! environment, starts the threads (`spoke::app`), and waits for a signal.
//!
//! ```text
//! spoke                                  run the proxy (configured by LINKERD2_PROXY_* / SPOKE_*)
//! spoke demo [--mesh] [--requests N]     embedded controller + proxy + backends, traffic, report (--mesh: two workloads over mTLS)
//! spoke controller --config FILE --listen ADDR   run the embedded controller alone
//! spoke init [--proxy-uid UID] ... [--dry-run]   install the pod's iptables rules
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use spoke::app::App;
use spoke::config::{Config, ProcessEnv};
use spoke::controller::embedded::{Controller, STOP_GRACE};

const USAGE: &str = "usage:
  spoke                                         run the proxy (see README for the environment)
  spoke demo [--mesh] [--requests N]            run the demo (--mesh: two spokes over mTLS, the controller as CA)
  spoke controller --config FILE [--listen ADDR]  serve a ServiceProfile file over the Destination API
  spoke init [--proxy-uid UID] [--inbound-port P] [--outbound-port P]
             [--inbound-ports-to-ignore P,P-P] [--outbound-ports-to-ignore P,P-P]
             [--subnets-to-ignore CIDR,CIDR] [--dry-run]
                                                install the iptables rules that redirect a pod's traffic
  spoke --version";

/// Rust's allocations go to dlmalloc: one heap behind one lock, with no
/// per-thread caches but the event loop's (`spoke::alloc`). glibc's malloc
/// gives every thread a cache of freed chunks it alone can reuse; a discovery
/// thread frees a message's worth of chunks and then parks for minutes, so
/// with 2,000 of them those caches held about 6 MiB that no one could use.
/// gRPC's C core keeps the system malloc.
#[global_allocator]
static ALLOC: spoke::alloc::Allocator = spoke::alloc::Allocator;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match Config::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spoke: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log_filter);
    match args.first().map(String::as_str) {
        None | Some("run") => run(cfg),
        Some("demo") => demo(cfg, &args[1..]),
        Some("controller") => controller(&args[1..]),
        Some("init") => init(&args[1..]),
        Some("--version") | Some("-V") => {
            println!("spoke {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | Some("help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("spoke: unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str) {
    env_logger::Builder::new()
        .parse_filters(filter)
        .format_timestamp_millis()
        .init();
}

/// Runs the proxy until SIGTERM or SIGINT, then drains it: requests in
/// flight get the grace period to finish. A second signal exits at once.
fn run(cfg: Config) -> ExitCode {
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("spoke: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = match App::start(&cfg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spoke: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sig = signals.forever().next().unwrap_or(SIGTERM);
    log::info!("received signal {sig}; draining (a second signal exits at once)");
    let handle = signals.handle();
    let shutdown = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            let result = app.shutdown();
            // Ends the wait for a second signal below.
            handle.close();
            result
        });
    let shutdown = match shutdown {
        Ok(t) => t,
        Err(e) => {
            log::error!("cannot start the shutdown thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(sig) = signals.forever().next() {
        log::warn!("received signal {sig} again; exiting now");
        std::process::exit(1);
    }
    match shutdown.join() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            log::error!("the shutdown thread panicked");
            ExitCode::FAILURE
        }
    }
}

fn demo(cfg: Config, args: &[String]) -> ExitCode {
    let mut requests = 600usize;
    let mut mesh = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--mesh" {
            mesh = true;
            continue;
        }
        match (a.as_str(), it.next()) {
            ("--requests", Some(n)) => match n.parse() {
                Ok(n) if n > 0 && n <= 1_000_000 => requests = n,
                _ => {
                    eprintln!("spoke demo: --requests takes a number from 1 to 1000000");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("spoke demo: unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let report = if mesh {
        spoke::demo_mesh::run(&cfg, requests)
    } else {
        spoke::demo::run(&cfg, requests)
    };
    match report {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spoke demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init(args: &[String]) -> ExitCode {
    let options = match spoke::init::parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("spoke init: {e}");
            return ExitCode::from(2);
        }
    };
    match spoke::init::run(&options) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spoke init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn controller(args: &[String]) -> ExitCode {
    let mut config = None;
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8086));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--config", Some(p)) => config = Some(PathBuf::from(p)),
            ("--listen", Some(l)) => match l.parse() {
                Ok(addr) => listen = addr,
                Err(_) => {
                    eprintln!("spoke controller: --listen takes ip:port, got {l:?}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("spoke controller: unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("spoke controller: --config FILE is required\n{USAGE}");
        return ExitCode::from(2);
    };
    // Installed before the server starts, so a SIGTERM that comes as soon as
    // the port is open still stops it gracefully rather than by default action.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("spoke controller: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Arc::new(
        grpcio::EnvBuilder::new()
            .cq_count(1)
            .name_prefix("grpc")
            .build(),
    );
    // `spoke controller` always issues identities: with the configured CA, or
    // one it generates, whose certificate it writes out for workloads to trust.
    let identity = match spoke::identity::config::from_env(&ProcessEnv, true) {
        Ok(s) => s.issuer,
        Err(e) => {
            eprintln!("spoke controller: {e}");
            return ExitCode::from(2);
        }
    };
    // A generated CA's key lives in memory only, so the default anchors file
    // is this process's own, and is removed when it stops.
    let default_out = std::env::temp_dir().join(format!(
        "spoke-controller-{}-trust-anchors.pem",
        std::process::id()
    ));
    let source = identity.source(Some(default_out.clone()));
    let issuer = source.as_ref().map(|s| (s, identity.lifetime));
    let c = match Controller::start(env, &config, listen, issuer) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spoke controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "spoke controller serving {} on {}",
        config.display(),
        c.addr()
    );
    // (A generated CA's anchors file is logged by the issuer: stdout carries
    // only the line above, which callers read and then may close.)
    let sig = signals.forever().next().unwrap_or(SIGTERM);
    log::info!("received signal {sig}; ending open streams and stopping");
    c.shutdown(STOP_GRACE);
    if identity.load.is_none() && identity.anchors_out.is_none() {
        let _ = std::fs::remove_file(&default_out);
    }
    ExitCode::SUCCESS
}
