//! Compiles the services' server code with protox (pure Rust, no protoc needed), their
//! messages and clients taken from `rust-ms-clients` (which owns the `.proto` files), and
//! keeps one descriptor set per service for gRPC reflection, so that a node's reflection
//! shows only its own API.
use prost::Message;

const PROTOS: &str = "../clients/proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (name, proto) in [
        ("user", "user/v1/user.proto"),
        ("order", "order/v1/order.proto"),
    ] {
        let set = protox::compile([proto], [PROTOS])?;
        std::fs::write(
            out.join(format!("{name}_descriptor.bin")),
            set.encode_to_vec(),
        )?;
    }
    let all = protox::compile(["user/v1/user.proto", "order/v1/order.proto"], [PROTOS])?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".user.v1", "::clients::user::v1")
        .extern_path(".order.v1", "::clients::order::v1")
        .compile_fds(all)?;
    println!("cargo:rerun-if-changed={PROTOS}");
    Ok(())
}
