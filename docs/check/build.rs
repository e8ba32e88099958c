//! The protos the guide's examples serve and call, compiled as a service's build script
//! compiles them: the greeter of examples/greeter, the guide's own, and user.v1 (called).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    rust_ms_build::Protos::new(&[
        "proto",
        "../../examples/greeter/proto",
        "../../clients/proto",
    ])
    .serves(&[
        "../../examples/greeter/proto/greeter/v1/greeter.proto",
        "proto/numbers/v1/numbers.proto",
        "proto/inventory/v1/inventory.proto",
        "proto/showcase/v1/showcase.proto",
        "proto/showcase/v1/clock.proto",
    ])
    .calls(&["../../clients/proto/user/v1/user.proto"])
    .compile()?;
    Ok(())
}
