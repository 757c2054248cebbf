//! Compiles etcd's v3 API from the workspace's top-level `proto/` with a pure-Rust protobuf
//! compiler (protox), so a fresh machine builds without a system `protoc`. The server's own
//! `proto/internal.proto` is compiled by the root build.rs, on top of these types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../../proto";
    let files = [
        format!("{dir}/kv.proto"),
        format!("{dir}/auth.proto"),
        format!("{dir}/rpc.proto"),
        format!("{dir}/v3lock.proto"),
        format!("{dir}/v3election.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(&files, [dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
