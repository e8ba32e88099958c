//! For a rust-ms service's `build.rs`: one call compiles its `.proto` files with protox
//! (pure Rust: no `protoc` on the machine) into tonic client and server code, and writes the
//! encoded `FileDescriptorSet` that `rust_ms::include_descriptors!()` embeds for gRPC
//! reflection.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     rust_ms_build::compile_protos(&["proto/greeter/v1/greeter.proto"], &["proto"])
//! }
//! ```

use std::path::{Path, PathBuf};

use prost::Message;

/// The file in `OUT_DIR` that holds the descriptor set; `rust_ms::include_descriptors!()`
/// reads it.
pub const DESCRIPTORS_FILE: &str = "rust_ms_descriptors.bin";

/// Compiles `protos` (found under `includes`) into tonic code in `OUT_DIR`, to be included
/// with `tonic::include_proto!("package")`, and their descriptor set into
/// [`DESCRIPTORS_FILE`]. Cargo reruns the build script when anything under `includes`
/// changes.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let set = protox::compile(protos, includes)?;
    std::fs::write(out.join(DESCRIPTORS_FILE), set.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(set)?;
    for include in includes {
        println!("cargo:rerun-if-changed={}", include.as_ref().display());
    }
    Ok(())
}
