//! Fuzzes the TCP client's response decoding on arbitrary frames: `decode_response` (header
//! tagged fields, bounded schema walk, kafka-protocol's decoder) must never panic nor abort on
//! a huge allocation, whatever a broker's bytes claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_log::net::decode_response;
use rill_log::net::versions::{client_max, SUPPORTED};

fuzz_target!(|input: &[u8]| {
    // Byte 0 picks the API among those rill's clients send (so most inputs reach a schema)
    // and byte 1 the version the request went in (up to one past the newest the clients
    // send); the rest is the response frame after the correlation id.
    let Some((&[key_pick, version], rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let (key, _, max) = SUPPORTED[usize::from(key_pick) % SUPPORTED.len()];
    let newest = client_max(key).unwrap_or(max);
    let version = i16::from(version) % (newest + 2);
    let body = bytes::Bytes::copy_from_slice(rest);
    if let Ok(response) = decode_response(key, version, body) {
        // The answer is of the kind asked for.
        assert!(format!("{response:?}").starts_with(&format!("{key:?}(")));
    }
});
