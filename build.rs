//! Compiles `proto/internal.proto` (package minietcdpb: Raft commands and the peer service)
//! with a pure-Rust protobuf compiler (protox), so a fresh machine builds minietcd without a
//! system `protoc`. The etcd API it builds on (etcdserverpb, mvccpb, authpb) is compiled once,
//! by the `minietcd-proto` crate, and referred to here through extern paths.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/internal.proto"];
    for f in [
        "proto/internal.proto",
        "proto/rpc.proto",
        "proto/kv.proto",
        "proto/auth.proto",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".etcdserverpb", "::minietcd_proto::etcdserverpb")
        .extern_path(".mvccpb", "::minietcd_proto::mvccpb")
        .extern_path(".authpb", "::minietcd_proto::authpb")
        .compile_fds(fds)?;
    Ok(())
}
