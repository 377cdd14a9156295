//! Kafka's framing: a 4-byte big-endian length, then a request header (v0: api key, api
//! version, correlation id; v1: + client id; v2: + tagged fields) and the body. Responses carry
//! the correlation id (and, in flexible versions, an empty tagged-field section) before theirs.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads the `len` bytes of a frame's body (its length already read) into a buffer of its
/// own, straight into uninitialised capacity: nothing is zeroed only to be overwritten.
pub async fn read_body<R: AsyncRead + Unpin>(rd: &mut R, len: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let want = (len - buf.len()) as u64;
        if AsyncReadExt::take(&mut *rd, want)
            .read_buf(&mut buf)
            .await?
            == 0
        {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

/// A request header, parsed by hand so a hostile one costs nothing to reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// Why a frame could not be read as a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request header too short")]
    Truncated,
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header: {0}")]
    Malformed(&'static str),
}

/// Parses the header at the start of `frame`; returns it with the offset where the body starts.
pub fn parse_header(frame: &[u8]) -> Result<(RequestHeader, usize), FrameError> {
    let fixed = frame.get(..8).ok_or(FrameError::Truncated)?;
    let api_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let api_version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let key = ApiKey::try_from(api_key).map_err(|_| FrameError::UnknownApiKey(api_key))?;
    let header_version = key.request_header_version(api_version);
    let mut pos = 8;
    let mut client_id = None;
    if header_version >= 1 {
        // The client id stays a classic (int16-length) string even in header v2.
        let len = frame.get(pos..pos + 2).ok_or(FrameError::Truncated)?;
        let len = i16::from_be_bytes([len[0], len[1]]);
        pos += 2;
        if len >= 0 {
            let raw = frame
                .get(pos..pos + len as usize)
                .ok_or(FrameError::Truncated)?;
            client_id = Some(String::from_utf8_lossy(raw).into_owned());
            pos += len as usize;
        } else if len != -1 {
            return Err(FrameError::Malformed("negative client id length"));
        }
    }
    if header_version >= 2 {
        let count = uvarint(frame, &mut pos)?;
        if count as usize > super::schema::MAX_TAGGED_FIELDS {
            return Err(FrameError::Malformed(
                "more than 10,000 tagged fields in the header (Kafka's limit)",
            ));
        }
        for _ in 0..count {
            let _tag = uvarint(frame, &mut pos)?;
            let size = uvarint(frame, &mut pos)? as usize;
            if size > frame.len() - pos {
                return Err(FrameError::Truncated);
            }
            pos += size;
        }
    }
    Ok((
        RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
        },
        pos,
    ))
}

fn uvarint(b: &[u8], pos: &mut usize) -> Result<u32, FrameError> {
    let mut value = 0u32;
    for i in 0..5 {
        let byte = *b.get(*pos).ok_or(FrameError::Truncated)?;
        *pos += 1;
        if i == 4 && byte > 0x0f {
            return Err(FrameError::Malformed("varint too long"));
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(FrameError::Malformed("varint too long"))
}

/// Starts a response frame: room for the length, the correlation id, and in header v1 an
/// empty tagged-field section. Finish it with [`finish_frame`].
pub fn start_response(correlation_id: i32, header_version: i16) -> BytesMut {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0);
    }
    buf
}

/// Record fields at least this large are not copied into an encoded frame but written
/// beside it ([`set_aside`], [`split_frame`]): at this size the copy costs more than the
/// extra chunk.
pub const SET_ASIDE_BYTES: usize = 64 * 1024;

/// A stand-in for the `i`th record field set aside: 16 bytes no real frame is expected to
/// hold (a per-process random half and the index), found again after encoding.
pub fn placeholder(i: usize) -> Bytes {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x72696c6c);
        h.finish()
    });
    let mut b = BytesMut::with_capacity(16);
    b.put_u64(seed);
    b.put_u64(i as u64);
    b.freeze()
}

/// Takes `field` aside if it is a large record field, leaving the `i`th placeholder:
/// `taken` keeps the original, in encoding order.
pub fn set_aside(field: &mut Option<Bytes>, taken: &mut Vec<Bytes>) {
    if field.as_ref().is_some_and(|r| r.len() >= SET_ASIDE_BYTES) {
        let real = field.replace(placeholder(taken.len()));
        taken.extend(real);
    }
}

/// A frame encoded with placeholders for the record fields set aside (`taken`, in the order
/// they appear), as the chunks to write: the encoded bytes up to each placeholder's length
/// prefix, the real prefix, the records themselves (not copied), and so on; the frame's
/// length (its first 4 bytes) made right. `flexible` versions prefix bytes with an unsigned
/// varint of length + 1, the others with an `i32`.
pub fn split_frame(
    mut frame: BytesMut,
    taken: Vec<Bytes>,
    flexible: bool,
) -> Result<Vec<Bytes>, &'static str> {
    if taken.is_empty() {
        return Ok(vec![frame.freeze()]);
    }
    let prefix = |len: usize| -> Vec<u8> {
        if flexible {
            let mut out = Vec::with_capacity(5);
            let mut n = len as u64 + 1;
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out
        } else {
            (len as i32).to_be_bytes().to_vec()
        }
    };
    // Where each placeholder (and its 16-byte prefix) sits.
    let mut cuts = Vec::with_capacity(taken.len());
    let mut from = 4;
    for i in 0..taken.len() {
        let mark = placeholder(i);
        let at = frame[from..]
            .windows(16)
            .position(|w| w == &mark[..])
            .map(|p| from + p)
            .ok_or("a record placeholder went missing in encoding")?;
        let expected = prefix(16);
        let start = at
            .checked_sub(expected.len())
            .filter(|s| frame[*s..at] == expected[..])
            .ok_or("a record placeholder lost its length prefix")?;
        cuts.push((start, at + 16));
        from = at + 16;
    }
    let prefixes: Vec<Vec<u8>> = taken.iter().map(|r| prefix(r.len())).collect();
    let total = frame.len() - cuts.iter().map(|(s, e)| e - s).sum::<usize>()
        + taken.iter().map(Bytes::len).sum::<usize>()
        + prefixes.iter().map(Vec::len).sum::<usize>();
    let len = i32::try_from(total - 4).map_err(|_| "frame too large")?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    let frame = frame.freeze();
    let mut chunks = Vec::with_capacity(3 * taken.len() + 1);
    let mut at = 0;
    for (((start, end), records), prefix) in cuts.into_iter().zip(taken).zip(prefixes) {
        chunks.push(frame.slice(at..start));
        chunks.push(Bytes::from(prefix));
        chunks.push(records);
        at = end;
    }
    chunks.push(frame.slice(at..));
    Ok(chunks)
}

/// Writes the frame length into a buffer started by [`start_response`] (or any buffer that
/// begins with 4 reserved bytes).
pub fn finish_frame(buf: &mut BytesMut) {
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch response with big records, encoded with them set aside, is byte for byte the
    /// frame encoded with them in place, for a flexible and an older version.
    #[test]
    fn frames_with_records_set_aside_are_the_same_bytes() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{FetchResponse, TopicName};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let records = |n: usize, b: u8| Some(Bytes::from(vec![b; n]));
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_records(records(SET_ASIDE_BYTES + 5, 1)),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(records(10, 2)),
                PartitionData::default()
                    .with_partition_index(2)
                    .with_records(records(200_000, 3)),
            ])]);
        for version in [4i16, 11, 12] {
            let mut whole = start_response(9, i16::from(version >= 12));
            resp.encode(&mut whole, version).unwrap();
            finish_frame(&mut whole);
            let mut aside = resp.clone();
            let mut taken = Vec::new();
            for p in aside
                .responses
                .iter_mut()
                .flat_map(|t| t.partitions.iter_mut())
            {
                set_aside(&mut p.records, &mut taken);
            }
            assert_eq!(taken.len(), 2, "only the large ones");
            let mut frame = start_response(9, i16::from(version >= 12));
            aside.encode(&mut frame, version).unwrap();
            let chunks = split_frame(frame, taken, version >= 12).unwrap();
            assert_eq!(chunks.len(), 7);
            assert_eq!(chunks.concat(), whole.to_vec(), "v{version}");
        }
    }

    #[test]
    fn headers_v0_to_v2_parse_and_bad_ones_are_refused() {
        // Metadata v1 (header v1): key 3, version 1, correlation 7, client "ab".
        let mut f = vec![0, 3, 0, 1, 0, 0, 0, 7, 0, 2, b'a', b'b'];
        let (h, body) = parse_header(&f).unwrap();
        assert_eq!(
            h,
            RequestHeader {
                api_key: 3,
                api_version: 1,
                correlation_id: 7,
                client_id: Some("ab".into())
            }
        );
        assert_eq!(body, 12);
        // Metadata v9 (header v2): a tagged section with one 2-byte field.
        f[3] = 9;
        f.extend_from_slice(&[1, 5, 2, 0xaa, 0xbb, 0x42]);
        let (h, body) = parse_header(&f).unwrap();
        assert_eq!((h.api_version, body), (9, 17));
        // A null client id.
        let (h, _) = parse_header(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff]).unwrap();
        assert_eq!(h.client_id, None);
        assert_eq!(parse_header(&[0, 3, 0]), Err(FrameError::Truncated));
        assert_eq!(
            parse_header(&[0x7f, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownApiKey(0x7f00))
        );
        // A client id longer than the frame, a tagged field past the end.
        assert_eq!(
            parse_header(&[0, 3, 0, 1, 0, 0, 0, 7, 0, 9, b'a']),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            parse_header(&[0, 3, 0, 9, 0, 0, 0, 7, 0, 0, 1, 5, 100]),
            Err(FrameError::Truncated)
        );
    }
}
