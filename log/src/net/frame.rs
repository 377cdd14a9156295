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

/// Writes the frame length into a buffer started by [`start_response`] (or any buffer that
/// begins with 4 reserved bytes).
pub fn finish_frame(buf: &mut BytesMut) {
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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
