//! Fuzzes the server's request decoding on arbitrary frames: `decode_request` (header, version
//! check, bounded schema walk, kafka-protocol's decoder) must never panic nor abort on a huge
//! allocation, whatever the bytes claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_log::net::{decode_request, Decoded};

fuzz_target!(|input: &[u8]| {
    // Byte 0 picks the API key among those rill serves (so most inputs reach a schema) and
    // byte 1 the version; the rest is the frame after the key and version.
    let Some((&[key_pick, version], rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let apis = rill_log::net::versions::SUPPORTED;
    let (key, min, max) = apis[usize::from(key_pick) % apis.len()];
    let span = (max - min + 2) as u8;
    let version = min + i16::from(version % span);
    let mut frame = Vec::with_capacity(4 + rest.len());
    frame.extend_from_slice(&(key as i16).to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(rest);
    let frame = bytes::Bytes::from(frame);
    match decode_request(&frame, 1 << 16) {
        Ok(Decoded::Request(header, _)) => assert_eq!(header.api_key, key as i16),
        Ok(Decoded::UnsupportedApiVersions(header)) => assert_eq!(header.api_key, 18),
        Err(_) => {}
    }
});
