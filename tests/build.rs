//! Compiles the test-only protos with protox: a later release of the user service (an
//! upgrade without a second binary) and a probe service with streams and failures.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for name in ["user_next", "probe"] {
        let set = protox::compile([format!("{name}.proto")], ["proto"])?;
        std::fs::write(
            out.join(format!("{name}_descriptor.bin")),
            set.encode_to_vec(),
        )?;
        tonic_prost_build::configure().compile_fds(set)?;
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
