//! The public gRPC API, package `diptych.v1`, generated from `proto/diptych/v1/*.proto`.
//!
//! Handlers in `diptych-service` adapt these types to the domain; nothing below the gRPC edge sees
//! a protobuf message.

#![allow(missing_docs, clippy::all)]

/// Messages and services of `diptych.v1`.
pub mod v1 {
    tonic::include_proto!("diptych.v1");
}

/// The internal API between the routers and the shards of a cluster, `diptych.internal.v1`
/// (docs/CLUSTER.md); never served to clients.
pub mod internal {
    /// Messages and services of `diptych.internal.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/internal/diptych.internal.v1.rs"));
    }
}

/// The encoded file descriptor set of `diptych.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("diptych_v1_descriptor");

/// The encoded file descriptor set of `diptych.internal.v1` (with the `diptych.v1` files it
/// imports): the methods the internal services answer, for naming them in metrics. Not served
/// by reflection.
pub const INTERNAL_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("diptych_internal_v1_descriptor");
