//! Generates the Rust types of Linkerd's destination API from `proto/` with
//! protobuf-codegen's pure-Rust parser, so no `protoc` binary is needed.
//! The output lands in `$OUT_DIR/proto/` and is included by `src/proto.rs`.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .inputs([
            "proto/destination.proto",
            "proto/net.proto",
            "proto/http_types.proto",
        ])
        .cargo_out_dir("proto")
        .run_from_script();
}
