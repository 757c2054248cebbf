//! etcd's gateway JSON mapping (grpc-gateway v1's `JSONPb{OrigName: true}`): fields under
//! their .proto names, fields at their default value left out, 64-bit integers as strings,
//! bytes as base64, enums by name. Requests accept .proto or lowerCamel names, numbers or
//! strings for integers, and ignore fields they do not know (as etcd's gateway does).

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use prost_reflect::{MethodDescriptor, SerializeOptions};

/// Why a request could not be mapped to a message, or a message to JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
}

/// The descriptors of etcd's API, compiled into minietcd-proto.
#[derive(Clone)]
pub struct Descriptors {
    pool: DescriptorPool,
}

impl Descriptors {
    pub fn load() -> Result<Self, JsonError> {
        let pool = DescriptorPool::decode(minietcd_proto::FILE_DESCRIPTOR_SET)?;
        Ok(Descriptors { pool })
    }

    /// The method `name` of service `service` (full name, e.g. `etcdserverpb.KV`).
    pub fn method(&self, service: &str, name: &str) -> Option<MethodDescriptor> {
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == name)
    }
}

/// A JSON request as an encoded message of type `desc`.
pub fn request_from_json(
    desc: &MessageDescriptor,
    value: serde_json::Value,
) -> Result<Bytes, JsonError> {
    let opts = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), value, &opts)?;
    Ok(Bytes::from(msg.encode_to_vec()))
}

/// An encoded message of type `desc` as etcd's gateway writes it.
pub fn response_to_json(desc: &MessageDescriptor, encoded: Bytes) -> Result<Vec<u8>, JsonError> {
    let msg = DynamicMessage::decode(desc.clone(), encoded)?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
        .stringify_64_bit_integers(true);
    let mut out = Vec::new();
    msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &opts)?;
    Ok(out)
}
