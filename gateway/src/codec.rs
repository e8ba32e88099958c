//! gRPC as `/api` speaks it: messages built at run time from reflected descriptors, framed
//! into a unary request and read back from its reply (the rpc port passes bytes and
//! needs none of it).

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder};

/// Decodes replies as messages of its descriptor.
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the reply: {e}")))
    }
}

/// A message as a unary gRPC request's body: not compressed, its length, its bytes.
pub fn framed(message: &DynamicMessage) -> Result<bytes::Bytes, Status> {
    let encoded = message.encode_to_vec();
    let length = u32::try_from(encoded.len())
        .map_err(|_| Status::invalid_argument("the request's message is over 4 GiB"))?;
    let mut body = Vec::with_capacity(5 + encoded.len());
    body.push(0);
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(&encoded);
    Ok(body.into())
}

/// The one message of a unary reply, or the status the node ended it with.
pub async fn read_reply(
    response: http::Response<tonic::body::Body>,
    output: MessageDescriptor,
) -> Result<DynamicMessage, Status> {
    // Trailers-only: a status and no message.
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    let (parts, body) = response.into_parts();
    let mut reply = tonic::codec::Streaming::new_response(
        DynamicDecoder(output),
        body,
        parts.status,
        None,
        None,
    );
    let message = reply
        .message()
        .await?
        .ok_or_else(|| Status::internal("the node ended its reply without a message"))?;
    // A status after the message still decides the call.
    reply.trailers().await?;
    Ok(message)
}

/// The messages of a server stream as they come, or the status the node refused it with
/// before sending any (trailers-only); a status at its end comes as the stream's error.
pub fn read_stream(
    response: http::Response<tonic::body::Body>,
    output: MessageDescriptor,
) -> Result<tonic::codec::Streaming<DynamicMessage>, Status> {
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    let (parts, body) = response.into_parts();
    Ok(tonic::codec::Streaming::new_response(
        DynamicDecoder(output),
        body,
        parts.status,
        None,
        None,
    ))
}
