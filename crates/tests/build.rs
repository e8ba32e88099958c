//! Compiles the test-only protos (a later release of the user service) with protox, so
//! that an upgrade can be tested against the gateway without a second binary.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let set = protox::compile(["user_next.proto"], ["proto"])?;
    std::fs::write(out.join("user_next_descriptor.bin"), set.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(set)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
