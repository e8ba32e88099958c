//! The rust-ms guide's code, checked.
//!
//! Every chapter of the guide (`docs/src/*.md`) is included below as the documentation of
//! an empty module, so that `cargo test` compiles each of its Rust blocks as a doctest
//! against the real crates (this crate's dev-dependencies) and runs those not marked
//! `no_run`. `build.rs` compiles the protos the examples serve and call, as a service's
//! build script does. The configuration reference is checked by
//! `tests/configuration_reference.rs`.
//!
//! mdBook renders the same files (`mdbook build docs`) and runs none of them.

macro_rules! chapters {
    ($($module:ident = $file:literal),+ $(,)?) => {
        $(
            #[doc = include_str!(concat!("../../src/", $file))]
            pub mod $module {}
        )+
        /// Every chapter file included above, for the test that holds this list to
        /// `SUMMARY.md`.
        pub const CHAPTERS: &[&str] = &[$($file),+];
    };
}

chapters! {
    introduction = "introduction.md",
    getting_started = "getting-started.md",
    writing_a_service = "writing-a-service.md",
    calling_services = "calling-services.md",
    call_stack = "call-stack.md",
    settings = "settings.md",
    testing = "testing.md",
    streams_and_state = "streams-and-state.md",
    gateway = "gateway.md",
    rest = "rest.md",
    status_codes = "status-codes.md",
    canonical_json = "canonical-json.md",
    operating = "operating.md",
    deploying = "deploying.md",
    performance = "performance.md",
    registry_backend = "registry-backend.md",
    configuration = "configuration.md",
    crates = "crates.md",
}
