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
        self.compile_into(&out)
    }

    fn compile_into(self, out: &Path) -> Result<(), BuildError> {
        let called = self.set_of(&self.calls)?;
        let served = self.set_of(&self.serves)?;
        std::fs::write(out.join(CALLED_DESCRIPTORS_FILE), &called.encoded)?;
        std::fs::write(out.join(DESCRIPTORS_FILE), &served.encoded)?;
        // Called first: a package both called and served is then written with its server.
        if !called.set.file.is_empty() {
            tonic_prost_build::configure()
                .build_server(false)
                .out_dir(out)
                .compile_fds(called.set)?;
        }
        if !served.set.file.is_empty() {
            tonic_prost_build::configure()
                .out_dir(out)
                .compile_fds(served.set)?;
        }
        for include in &self.includes {
            println!("cargo:rerun-if-changed={}", include.display());
        }
        Ok(())
    }

    /// The files `protos` need, imports and comments included, as `protox::compile`
    /// gives them.
    fn set_of(&self, protos: &[PathBuf]) -> Result<Compiled, BuildError> {
        if protos.is_empty() {
            return Ok(Compiled::default());
        }
        let mut resolver = protox::file::ChainFileResolver::new();
        for include in &self.includes {
            resolver.add(protox::file::IncludeFileResolver::new(include.clone()));
        }
        // After the crate's own folders: a copy of its own of these files wins.
        resolver.add(Bundled);
        resolver.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler
            .include_imports(true)
            .include_source_info(true)
            .open_files(protos)?;
        Ok(Compiled {
            set: compiler.file_descriptor_set(),
            encoded: compiler.encode_file_descriptor_set(),
        })
    }
}

/// The `google.api.http` annotation's schema, so that a service annotates its methods
/// with REST routes (`import "google/api/annotations.proto";`) with nothing to download.
const BUNDLED: &[(&str, &str)] = &[
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
];

/// Resolves the [`BUNDLED`] files by their import names.
struct Bundled;

impl protox::file::FileResolver for Bundled {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match BUNDLED.iter().find(|(bundled, _)| *bundled == name) {
            Some((name, source)) => protox::file::File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// One descriptor set, twice: decoded for the code generator, and encoded by protox for
/// the node to serve. Only the encoding keeps extension options (custom options such as
/// `google.api.http`), which prost's `*Options` types drop.
#[derive(Debug, Default)]
struct Compiled {
    set: prost_types::FileDescriptorSet,
    encoded: Vec<u8>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use protox::prost_reflect::{DescriptorPool, Value};

    const TAGGED: &str = r#"
syntax = "proto3";
package tagged.v1;

import "google/protobuf/descriptor.proto";

extend google.protobuf.MethodOptions {
  string tag = 50001;
}

message Word {
  string text = 1;
}

service Tagged {
  rpc Say(Word) returns (Word) {
    option (tag) = "x";
  }
}
"#;

    /// A folder of its own under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_served_descriptor_set_keeps_a_custom_method_option() {
        let scratch = Scratch::new("rust-ms-build-custom-option");
        let protos = scratch.0.join("proto");
        let out = scratch.0.join("out");
        std::fs::create_dir_all(protos.join("tagged/v1")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(protos.join("tagged/v1/tagged.proto"), TAGGED).unwrap();

        Protos::new(&[&protos])
            .serves(&[protos.join("tagged/v1/tagged.proto")])
            .compile_into(&out)
            .unwrap();

        let served = std::fs::read(out.join(DESCRIPTORS_FILE)).unwrap();
        let pool = DescriptorPool::decode(served.as_slice()).unwrap();
        let tag = pool.get_extension_by_name("tagged.v1.tag").unwrap();
        let say = pool
            .get_service_by_name("tagged.v1.Tagged")
            .and_then(|service| service.methods().find(|m| m.name() == "Say"))
            .unwrap();
        assert_eq!(
            *say.options().get_extension(&tag),
            Value::String("x".to_owned())
        );
        // Comments and imports are served as before.
        assert!(
            pool.get_file_by_name("google/protobuf/descriptor.proto")
                .is_some()
        );
        let file = pool.get_file_by_name("tagged/v1/tagged.proto").unwrap();
        assert!(file.file_descriptor_proto().source_code_info.is_some());
        assert!(out.join("tagged.v1.rs").exists());
        let called = std::fs::read(out.join(CALLED_DESCRIPTORS_FILE)).unwrap();
        assert!(called.is_empty());
    }
}
