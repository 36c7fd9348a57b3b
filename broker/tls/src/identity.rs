//! The identity a client certificate carries: its subject's common name
//! (CN), read from the certificate's DER with a minimal reader of the
//! few structures on the way (no X.509 library needed for one field).

/// The subject CN of a DER certificate, if it has one in a text type.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (_, certificate, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    // [0] version (optional), serial, signature algorithm, issuer,
    // validity, then the subject.
    if tbs.first() == Some(&0xA0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (tag, subject, _) = tlv(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, rest) = tlv(rdns)?;
        rdns = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (_, attribute, rest) = tlv(attributes)?;
            attributes = rest;
            let (tag, oid, value) = tlv(attribute)?;
            if tag == 0x06 && oid == COMMON_NAME {
                let (kind, text, _) = tlv(value)?;
                return text_of(kind, text);
            }
        }
    }
    None
}

/// The OID 2.5.4.3 (commonName), encoded.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One DER tag-length-value: its tag, contents and what follows.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let len = rest[..bytes]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, &rest[bytes..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn text_of(kind: u8, bytes: &[u8]) -> Option<String> {
    match kind {
        // UTF8String, PrintableString, IA5String, TeletexString.
        0x0C | 0x13 | 0x16 | 0x14 => String::from_utf8(bytes.to_vec()).ok(),
        // BMPString: UTF-16 big endian.
        0x1E if bytes.len().is_multiple_of(2) => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of `tag` around `contents`.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn name(cn: &[u8]) -> Vec<u8> {
        let org = der(
            0x30,
            &[der(0x06, &[0x55, 0x04, 0x0A]), der(0x0C, b"Plant")].concat(),
        );
        let common = der(0x30, &[der(0x06, COMMON_NAME), cn.to_vec()].concat());
        der(0x30, &[der(0x31, &org), der(0x31, &common)].concat())
    }

    fn certificate(subject: Vec<u8>, with_version: bool) -> Vec<u8> {
        let mut tbs = Vec::new();
        if with_version {
            tbs.extend(der(0xA0, &der(0x02, &[2])));
        }
        tbs.extend(der(0x02, &[1; 20]));
        tbs.extend(der(0x30, &der(0x06, &[1, 2, 3])));
        tbs.extend(name(&der(0x0C, b"Test CA")));
        tbs.extend(der(
            0x30,
            &[der(0x17, b"260101000000Z"), der(0x17, b"270101000000Z")].concat(),
        ));
        tbs.extend(subject);
        tbs.extend(der(0x30, &[0; 200]));
        der(
            0x30,
            &[der(0x30, &tbs), der(0x30, &[]), der(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn finds_the_subject_common_name() {
        let cert = certificate(name(&der(0x0C, b"sensor-17")), true);
        assert_eq!(subject_common_name(&cert).as_deref(), Some("sensor-17"));
        let printable = certificate(name(&der(0x13, b"gw-2")), false);
        assert_eq!(subject_common_name(&printable).as_deref(), Some("gw-2"));
        let bmp = certificate(name(&der(0x1E, &[0, b'a', 0, b'b'])), true);
        assert_eq!(subject_common_name(&bmp).as_deref(), Some("ab"));
        let without = certificate(der(0x30, &[]), true);
        assert_eq!(subject_common_name(&without), None);
    }

    #[test]
    fn garbage_is_no_name_and_no_panic() {
        for bytes in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x05\x30\x03\x02\x01",
        ] {
            assert_eq!(subject_common_name(bytes), None);
        }
        let cert = certificate(name(&der(0x0C, b"x")), true);
        for cut in 0..cert.len() {
            let _ = subject_common_name(&cert[..cut]);
        }
    }
}
