//! Fuzzes the batch parsers on arbitrary bytes: none may panic, and what append validation
//! accepts must also decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_log::record::batch::{verify_batch, BatchIter};

mod common;
use common::reseal_all;
use rill_log::record::decode_batches;
use rill_log::record::{validate_batches, AppendOrigin};

fuzz_target!(|input: &[u8]| {
    // The first byte picks the topic kind (a compacted topic requires keys); the rest is the data.
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let keys_required = flags & 1 == 1;
    // Bit 1: re-seal each framed batch's CRC first, so mutations reach the record parsers
    // instead of dying at the checksum.
    let mut owned;
    let data = if flags & 2 == 2 {
        owned = data.to_vec();
        reseal_all(&mut owned);
        &owned[..]
    } else {
        data
    };

    let _ = verify_batch(data);

    // BatchIter yields verified batches back to back, then at most one error.
    let mut end = 0;
    for (h, bytes, at) in BatchIter::new(data).flatten() {
        assert_eq!(at, end, "batches are not contiguous");
        assert_eq!(bytes.len(), h.total_bytes());
        end = at + bytes.len();
    }
    assert!(end <= data.len());

    let decoded = decode_batches(data);

    // validate_batches parses the records of every batch (compressed ones after bounded
    // decompression), so whatever it accepts must decode.
    if validate_batches(data, 1 << 20, keys_required, AppendOrigin::Coordinator).is_ok() {
        assert!(
            decoded.is_ok(),
            "validate_batches accepted what decode_batches rejects: {:?}",
            decoded.err()
        );
    }
});

