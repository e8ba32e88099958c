//! `bench-busy --etcd-addr ADDR --rpc-port 0`: one node of fixed capacity for the overload runs.

fn main() -> std::process::ExitCode {
    rust_ms_bench::busy::service().run()
}
