//! Generates the Rust types of Linkerd's destination and identity APIs and of its
//! opaque transport header from `proto/` with
//! protobuf-codegen's pure-Rust parser, so no `protoc` binary is needed.
//! The output lands in `$OUT_DIR/proto/` and is included by `src/proto.rs`.
//!
//! It also links the C++ runtime that gRPC's C core needs statically, when the
//! toolchain has it (see `static_libstdcxx`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .inputs([
            "proto/destination.proto",
            "proto/net.proto",
            "proto/http_types.proto",
            "proto/identity.proto",
            "proto/transport_header.proto",
        ])
        .cargo_out_dir("proto")
        .run_from_script();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        static_libstdcxx();
    }
}

/// grpcio-sys asks for `-lstdc++`. Loading the shared libstdc++ costs an idle
/// proxy about 1.2 MiB of resident pages (relocations, locale set-up, code
/// around what is used), while linking the archive brings in only the objects
/// gRPC uses. A directory holding nothing but `libstdc++.a`, searched before
/// the system directories, makes the linker take the archive. Without the
/// archive (no `libstdc++-dev`), the shared library is used as before.
fn static_libstdcxx() {
    println!("cargo:rerun-if-env-changed=CXX");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_owned());
    let archive = match Command::new(&cxx)
        .arg("-print-file-name=libstdc++.a")
        .output()
    {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => PathBuf::new(),
    };
    // Without the archive, the compiler prints the bare name back.
    if !archive.is_absolute() || !archive.is_file() {
        println!("cargo:warning=no libstdc++.a from {cxx}; linking the shared libstdc++");
        return;
    }
    let dir = Path::new(&std::env::var("OUT_DIR").unwrap()).join("static-cxx");
    let link = dir.join("libstdc++.a");
    let _ = std::fs::remove_file(&link);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::os::unix::fs::symlink(&archive, &link))
        .unwrap_or_else(|e| {
            panic!(
                "cannot link {} into {}: {e}",
                archive.display(),
                dir.display()
            )
        });
    println!("cargo:rerun-if-changed={}", archive.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
}
