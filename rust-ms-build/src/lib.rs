//! For a rust-ms service's `build.rs`: compiles its `.proto` files with protox (pure Rust:
//! no `protoc` on the machine) into tonic code, and writes the encoded descriptor sets the
//! node embeds.
//!
//! A service says what it **serves** and what it **calls**:
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     rust_ms_build::Protos::new(&["proto"])
//!         .serves(&["proto/inventory/v1/inventory.proto"])
//!         .calls(&["proto/user/v1/user.proto"])
//!         .compile()?;
//!     Ok(())
//! }
//! ```
//!
//! - What it serves gets server and client code, and goes into [`DESCRIPTORS_FILE`]
//!   (`rust_ms::include_descriptors!()`), which the node's reflection serves.
//! - What it calls gets client code only, and goes into [`CALLED_DESCRIPTORS_FILE`]
//!   (`rust_ms::include_called_descriptors!()`), which the service client reads to know
//!   which methods are safe to repeat. It is not served: the node's reflection and its
//!   registered `grpc.services` list only what it serves.
//!
//! A crate that ships the clients of a service (as `rust-ms-clients` does for the example
//! services) only calls. [`compile_protos`] is the shorthand for a crate that only serves.

use std::path::{Path, PathBuf};

use prost::Message;

/// The file in `OUT_DIR` that holds the descriptor set of what the crate serves;
/// `rust_ms::include_descriptors!()` reads it.
pub const DESCRIPTORS_FILE: &str = "rust_ms_descriptors.bin";

/// The file in `OUT_DIR` that holds the descriptor set of what the crate calls;
/// `rust_ms::include_called_descriptors!()` reads it.
pub const CALLED_DESCRIPTORS_FILE: &str = "rust_ms_called_descriptors.bin";

/// Why the protos could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("OUT_DIR is not set: rust_ms_build runs inside a build script")]
    NoOutDir,
    #[error("{0}")]
    Protos(#[from] protox::Error),
    #[error("writing the generated code or descriptors: {0}")]
    Write(#[from] std::io::Error),
}

/// The `.proto` files of a crate, by what it does with them.
#[derive(Debug, Clone, Default)]
pub struct Protos {
    includes: Vec<PathBuf>,
    serves: Vec<PathBuf>,
    calls: Vec<PathBuf>,
}

impl Protos {
    /// Protos found under `includes` (the folders `import` paths start from).
    pub fn new(includes: &[impl AsRef<Path>]) -> Self {
        Self {
            includes: paths(includes),
            ..Self::default()
        }
    }

    /// Files whose services this crate implements.
    pub fn serves(mut self, protos: &[impl AsRef<Path>]) -> Self {
        self.serves.extend(paths(protos));
        self
    }

    /// Files whose services this crate calls.
    pub fn calls(mut self, protos: &[impl AsRef<Path>]) -> Self {
        self.calls.extend(paths(protos));
        self
    }

    /// Writes the code (to be included with `tonic::include_proto!("package")`) and both
    /// descriptor sets into `OUT_DIR`. Cargo reruns the build script when anything under
    /// the include folders changes.
    pub fn compile(self) -> Result<(), BuildError> {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or(BuildError::NoOutDir)?);
        let called = self.set_of(&self.calls)?;
        let served = self.set_of(&self.serves)?;
        std::fs::write(out.join(CALLED_DESCRIPTORS_FILE), called.encode_to_vec())?;
        std::fs::write(out.join(DESCRIPTORS_FILE), served.encode_to_vec())?;
        // Called first: a package both called and served is then written with its server.
        if !called.file.is_empty() {
            tonic_prost_build::configure()
                .build_server(false)
                .compile_fds(called)?;
        }
        if !served.file.is_empty() {
            tonic_prost_build::configure().compile_fds(served)?;
        }
        for include in &self.includes {
            println!("cargo:rerun-if-changed={}", include.display());
        }
        Ok(())
    }

    fn set_of(&self, protos: &[PathBuf]) -> Result<prost_types::FileDescriptorSet, BuildError> {
        if protos.is_empty() {
            return Ok(prost_types::FileDescriptorSet::default());
        }
        Ok(protox::compile(protos, &self.includes)?)
    }
}

/// Compiles `protos` (found under `includes`), all of them served: tonic code in
/// `OUT_DIR`, to be included with `tonic::include_proto!("package")`, and their
/// descriptor set in [`DESCRIPTORS_FILE`]. The same as
/// `Protos::new(includes).serves(protos).compile()`.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Box<dyn std::error::Error>> {
    Ok(Protos::new(includes).serves(protos).compile()?)
}

fn paths(list: &[impl AsRef<Path>]) -> Vec<PathBuf> {
    list.iter().map(|path| path.as_ref().to_owned()).collect()
}
