//! Compiles the vendored ONNX schema (`proto/onnx.proto`) into Rust with prost-build, so that the
//! exporter writes `encoder.onnx` and `decoder.onnx` from Rust without Python.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so that a fresh machine needs no system
//! package to build the training crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    println!("cargo:rerun-if-changed=proto/onnx.proto");
    // The schema's comments hold indented diagrams that rustdoc would run as doctests: leave them out
    // of the generated code (proto/onnx.proto is the documentation).
    prost_build::Config::new()
        .disable_comments(["."])
        .compile_protos(&["proto/onnx.proto"], &["proto"])?;
    Ok(())
}
