//! Builds the 12-bit lossy JPEG decoder shim (`csrc/jpeg12.c`) against GDCM's 12-bit IJG
//! library when its headers are installed (Debian: `libgdcm-dev`, in `make deps-apt`; another
//! folder can be named with `DIPTYCH_GDCM_JPEG12_INCLUDE`). Without them the crate still builds,
//! with cfg `jpeg12` unset: 12-bit lossy JPEG is then refused, as the pure-Rust decoder reads
//! only 8-bit DCT data, and a warning says so.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(jpeg12)");
    println!("cargo::rerun-if-changed=csrc/jpeg12.c");
    println!("cargo::rerun-if-env-changed=DIPTYCH_GDCM_JPEG12_INCLUDE");
    let include = std::env::var("DIPTYCH_GDCM_JPEG12_INCLUDE")
        .unwrap_or_else(|_| "/usr/include/gdcm-3.0/gdcmjpeg/12".to_string());
    // Watched even while absent (cargo then reruns this script), so installing the headers
    // later turns the decoder on without a clean build.
    println!("cargo::rerun-if-changed={include}/jpeglib.h");
    if !Path::new(&include).join("jpeglib.h").exists() {
        println!(
            "cargo::warning=GDCM's 12-bit JPEG headers are not in {include}: 12-bit lossy JPEG \
             will be refused; install them with `make deps-apt` (Debian package libgdcm-dev)"
        );
        return;
    }
    cc::Build::new()
        .file("csrc/jpeg12.c")
        .include(&include)
        .compile("diptych_jpeg12");
    println!("cargo::rustc-link-lib=dylib=gdcmjpeg12");
    println!("cargo::rustc-cfg=jpeg12");
}
