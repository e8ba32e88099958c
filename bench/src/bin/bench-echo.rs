//! `bench-echo --etcd-addr ADDR --rpc-port 0`: one upstream node of the benchmarks.

fn main() -> std::process::ExitCode {
    rust_ms_bench::echo::service().run()
}
