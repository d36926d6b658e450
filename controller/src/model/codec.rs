//! Serde helpers for what the replicated log and snapshots store.

/// A byte string in JSON as base64 text instead of serde's default array of numbers:
/// a third bigger than the bytes rather than up to four times, and decoded without a
/// value (and, inside an internally tagged enum, an allocation) per byte. Arrays, as
/// earlier versions wrote them, are still read.
pub mod b64 {
    use base64::Engine as _;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&ENGINE.encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("base64 text or an array of bytes")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            ENGINE.decode(v).map_err(E::custom)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        #[serde(tag = "op")]
        enum Tagged {
            Put {
                #[serde(with = "super")]
                spec: Vec<u8>,
            },
        }

        #[test]
        fn base64_out_arrays_and_base64_in() {
            let v = Tagged::Put {
                spec: b"{\"a\":1}\xff".to_vec(),
            };
            let json = serde_json::to_string(&v).expect("encode");
            assert_eq!(json, r#"{"op":"Put","spec":"eyJhIjoxff8="}"#);
            assert_eq!(serde_json::from_str::<Tagged>(&json).expect("decode"), v);
            // What earlier versions wrote.
            let old = r#"{"op":"Put","spec":[123,34,97,34,58,49,125,255]}"#;
            assert_eq!(serde_json::from_str::<Tagged>(old).expect("decode old"), v);
            assert!(serde_json::from_str::<Tagged>(r#"{"op":"Put","spec":"!"}"#).is_err());
        }
    }
}
