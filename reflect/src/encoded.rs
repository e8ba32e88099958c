//! Encoded descriptor files kept as bytes. prost's generated descriptor types drop the
//! fields they do not know when they decode, and extension options (custom method
//! options such as `google.api.http`) are such fields: a file that must keep them is
//! carried as the bytes it was compiled to, never decoded and encoded again.

use bytes::Bytes;
use prost::Message;

/// A `google.protobuf.FileDescriptorSet` whose files stay encoded: the same wire format
/// (`repeated FileDescriptorProto file = 1;`), each file read as bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// The bytes of each file of an encoded `FileDescriptorSet`, as they are in it (no copy
/// when `set` is already [`Bytes`]).
pub fn split_file_descriptor_set(set: impl Into<Bytes>) -> Result<Vec<Bytes>, prost::DecodeError> {
    Ok(EncodedSet::decode(set.into())?.file)
}

/// An encoded `FileDescriptorSet` of these encoded files, in this order; a set
/// `prost_reflect::DescriptorPool::decode_file_descriptor_set` reads with every option.
pub fn encode_file_descriptor_set(files: impl IntoIterator<Item = Bytes>) -> Vec<u8> {
    EncodedSet {
        file: files.into_iter().collect(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost_types::{FileDescriptorProto, FileDescriptorSet};

    #[test]
    fn a_set_splits_into_its_files_bytes_and_joins_back_to_the_same_bytes() {
        let file = |name: &str| FileDescriptorProto {
            name: Some(name.into()),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![file("a.proto"), file("b.proto")],
        }
        .encode_to_vec();
        let files = split_file_descriptor_set(set.clone()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|bytes| {
                FileDescriptorProto::decode(bytes.clone())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["a.proto", "b.proto"]);
        assert_eq!(encode_file_descriptor_set(files), set);
    }

    #[test]
    fn bytes_that_are_no_set_are_refused() {
        assert!(split_file_descriptor_set(vec![0x0a, 0x05, b'a']).is_err());
    }
}
