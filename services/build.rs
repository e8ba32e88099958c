//! Compiles the services' .proto files with protox (pure Rust, no protoc needed) and keeps
//! one descriptor set per service for gRPC reflection, so that a node's reflection shows
//! only its own API.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (name, proto) in [
        ("user", "user/v1/user.proto"),
        ("order", "order/v1/order.proto"),
    ] {
        let set = protox::compile([proto], ["proto"])?;
        std::fs::write(
            out.join(format!("{name}_descriptor.bin")),
            set.encode_to_vec(),
        )?;
    }
    let all = protox::compile(["user/v1/user.proto", "order/v1/order.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(all)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
