//! Compiles the protobuf schemas of the root crate into Rust.
//!
//! - `proto/onnx/onnx.proto` (always): the vendored ONNX schema, compiled with prost-build into
//!   `diptych::bundle::onnx`, the one set of ONNX messages that the exporter writes and the
//!   service reads.
//! - `proto/diptych/v1/` (feature `api` only): the public gRPC contract, compiled with tonic's
//!   build support into `diptych::api`; `proto/diptych/internal/v1/` (feature `api` too): the
//!   internal API of routers, shards and encoders, into `diptych::api::internal`. Crates that do not
//!   serve or call the API (training, the DICOM adapter) leave the feature off and compile no
//!   gRPC code.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so that a fresh machine needs no system
//! package to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    println!("cargo:rerun-if-changed=proto/onnx/onnx.proto");
    // The schema's comments hold indented diagrams that rustdoc would run as doctests: leave them
    // out of the generated code (proto/onnx/onnx.proto is the documentation).
    prost_build::Config::new()
        .disable_comments(["."])
        .compile_protos(&["proto/onnx/onnx.proto"], &["proto/onnx"])?;

    #[cfg(feature = "api")]
    compile_api()?;
    Ok(())
}

/// Compiles `proto/diptych/v1/*.proto` with tonic's build support.
#[cfg(feature = "api")]
fn compile_api() -> Result<(), Box<dyn std::error::Error>> {
    use std::path::PathBuf;

    let dir = PathBuf::from("proto/diptych/v1");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed=proto/diptych");
    // The folder itself, so that a new .proto file reruns this script.
    println!("cargo:rerun-if-changed={}", dir.display());

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("diptych_v1_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from("proto")])?;

    // The routers' and shards' internal API (docs/CLUSTER.md), its messages of diptych.v1
    // taken from the public API's generated code. Its own folder: the generator also writes the
    // imported diptych.v1 files there, which must not replace the public API's.
    let internal_out = out_dir.join("internal");
    std::fs::create_dir_all(&internal_out)?;
    let internal = [
        PathBuf::from("proto/diptych/internal/v1/encoder.proto"),
        PathBuf::from("proto/diptych/internal/v1/shard.proto"),
    ];
    for proto in &internal {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    tonic_prost_build::configure()
        .extern_path(".diptych.v1", "crate::api::v1")
        .file_descriptor_set_path(out_dir.join("diptych_internal_v1_descriptor.bin"))
        .out_dir(internal_out)
        .compile_protos(&internal, &[PathBuf::from("proto")])?;
    Ok(())
}
