//! The MD5 digests SQS answers so that SDKs can check a message arrived
//! intact (the Java, Go and JavaScript SDKs compare them): of the body's
//! UTF-8 bytes, and of the message attributes in SQS's own encoding — the
//! attributes sorted by name, each as its name, its data type, a transport
//! byte (1 for `String` and `Number`, 2 for `Binary`) and its value, every
//! string and value preceded by its length as a big-endian `u32`.

use ::md5::{Digest, Md5};
use tidewire_queues::Attribute;

/// The transport byte of `String` and `Number` values.
const STRING_TRANSPORT: u8 = 1;
/// The transport byte of `Binary` values.
const BINARY_TRANSPORT: u8 = 2;

/// The hex MD5 of a message body.
pub fn of_body(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

/// The hex MD5 of message attributes, given sorted by name (a `BTreeMap`'s
/// order); none when there are none.
pub fn of_attributes<'a>(
    attributes: impl IntoIterator<Item = (&'a String, &'a Attribute)>,
) -> Option<String> {
    let mut digest = Md5::new();
    let mut any = false;
    for (name, attribute) in attributes {
        any = true;
        update_prefixed(&mut digest, name.as_bytes());
        update_prefixed(&mut digest, attribute.data_type.as_bytes());
        match (&attribute.binary, &attribute.string) {
            (Some(bytes), _) => {
                digest.update([BINARY_TRANSPORT]);
                update_prefixed(&mut digest, bytes);
            }
            (None, value) => {
                digest.update([STRING_TRANSPORT]);
                update_prefixed(&mut digest, value.as_deref().unwrap_or("").as_bytes());
            }
        }
    }
    any.then(|| hex::encode(digest.finalize()))
}

fn update_prefixed(digest: &mut Md5, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    digest.update(len.to_be_bytes());
    digest.update(bytes);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn string(data_type: &str, value: &str) -> Attribute {
        Attribute {
            data_type: data_type.into(),
            string: Some(value.into()),
            binary: None,
        }
    }

    #[test]
    fn body_digest_is_plain_md5() {
        assert_eq!(of_body(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(of_body("hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    /// The vectors were computed with Python's hashlib over SQS's encoding
    /// (as tests/python/test_sqs.py checks what boto3 receives); the second
    /// also matches a digest checked against the Go SDK's types.
    #[test]
    fn attribute_digest_matches_the_sdks() {
        let mut attributes = BTreeMap::new();
        attributes.insert("trace".to_owned(), string("String", "abc"));
        attributes.insert("count".to_owned(), string("Number.int", "42"));
        attributes.insert(
            "blob".to_owned(),
            Attribute {
                data_type: "Binary".into(),
                string: None,
                binary: Some(vec![0, 1, 2, 255]),
            },
        );
        assert_eq!(
            of_attributes(&attributes).as_deref(),
            Some("559942ffeceac82243719e7ae616ea3a")
        );
        let mut attributes = BTreeMap::new();
        attributes.insert("ordinal".to_owned(), string("Number", "1"));
        attributes.insert("category".to_owned(), string("String", "test"));
        assert_eq!(
            of_attributes(&attributes).as_deref(),
            Some("d21ae90c49061e927f57df5f5d72be1f")
        );
        assert_eq!(of_attributes(&BTreeMap::new()), None);
    }
}
