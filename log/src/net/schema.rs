//! A bounded structural check of message bodies before they are decoded: requests in the
//! server, responses in the TCP client.
//!
//! The `kafka-protocol` decoders size vectors from array counts read off the wire, before any
//! element is read: a 20-byte message claiming two billion topics would make them ask for
//! hundreds of gigabytes, and a failed allocation aborts the process. So every body is first
//! walked against its schema (field types by version, from Kafka's message definitions):
//! each array count must fit in the bytes left (an element takes at least one byte), every
//! length must fit in the frame, and the whole message may hold at most `max_elements` array
//! elements. Kafka's own decoder limits hold on top (Kafka 4.4): no array of more than
//! [`MAX_ARRAY_ELEMENTS`] elements, no tagged-field section of more than
//! [`MAX_TAGGED_FIELDS`] fields. Only a body that walks cleanly is decoded.

use super::schema_responses::RESPONSES;
use super::schema_tables::REQUESTS;

/// The most elements one array (or compact array) may declare, as Kafka's decoders allow.
pub const MAX_ARRAY_ELEMENTS: usize = 1_000_000;
/// The most fields one tagged-field section may declare, as Kafka's decoders allow.
pub const MAX_TAGGED_FIELDS: usize = 10_000;

/// A field type, as Kafka's message schemas name them.
#[derive(Debug)]
pub(crate) enum Ty {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Uuid,
    /// `string`: int16 length (compact: unsigned varint length + 1); -1 (0) is null.
    String,
    /// `bytes`: int32 length (compact: unsigned varint length + 1); -1 (0) is null.
    Bytes,
    /// `records`: encoded like `bytes`.
    Records,
    /// `[]T`: int32 count (compact: unsigned varint count + 1); -1 (0) is null.
    Array(&'static Ty),
    /// A nested struct (an array element, or a struct-typed field); in flexible versions it
    /// ends with its own tagged fields.
    Struct(&'static [Field]),
}

/// One field of a message or struct.
#[derive(Debug)]
pub(crate) struct Field {
    /// Versions in which the field is present, inclusive (`i16::MAX` for "and later").
    pub versions: (i16, i16),
    pub ty: Ty,
    /// A tagged field (flexible versions only): not in the field order, but in the tagged
    /// section under this tag.
    pub tag: Option<u32>,
}

/// The request or response schema of one API.
#[derive(Debug)]
pub(crate) struct Schema {
    pub api_key: i16,
    pub name: &'static str,
    /// The versions the schema describes, inclusive.
    pub versions: (i16, i16),
    /// The first flexible version (compact encodings, tagged fields); `i16::MAX` if none.
    pub flexible_from: i16,
    pub fields: &'static [Field],
}

/// "And every later version".
pub(crate) const MAX: i16 = i16::MAX;

/// A field in the body, present in versions `from..=to`.
pub(crate) const fn f(from: i16, to: i16, ty: Ty) -> Field {
    Field {
        versions: (from, to),
        ty,
        tag: None,
    }
}

/// A field in the tagged section under `tag`, read in versions `from..=to`.
pub(crate) const fn tagged(tag: u32, from: i16, to: i16, ty: Ty) -> Field {
    Field {
        versions: (from, to),
        ty,
        tag: Some(tag),
    }
}

/// A schema entry.
pub(crate) const fn api(
    api_key: i16,
    name: &'static str,
    versions: (i16, i16),
    flexible_from: i16,
    fields: &'static [Field],
) -> Schema {
    Schema {
        api_key,
        name,
        versions,
        flexible_from,
        fields,
    }
}

/// Why a message body does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed body at byte {at}: {what}")]
pub struct WalkError {
    pub at: usize,
    pub what: &'static str,
}

/// The request schema of `api_key` covering `version`, if there is one.
pub(crate) fn schema(api_key: i16, version: i16) -> Option<&'static Schema> {
    find(REQUESTS, api_key, version)
}

/// The response schema of `api_key` covering `version`, if there is one.
pub(crate) fn response_schema(api_key: i16, version: i16) -> Option<&'static Schema> {
    find(RESPONSES, api_key, version)
}

fn find(schemas: &'static [Schema], api_key: i16, version: i16) -> Option<&'static Schema> {
    schemas
        .iter()
        .find(|s| s.api_key == api_key && s.versions.0 <= version && version <= s.versions.1)
}

/// Checks that `body` starts with a well-formed `version` message of `schema` holding at
/// most `max_elements` array elements in all; returns how many bytes the message took.
///
/// Bytes after the message are not an error: Kafka's brokers ignore them after a request, and
/// librdkafka relies on it (its Metadata v9+ request for all topics writes a 4-byte null
/// count where a 1-byte varint belongs, librdkafka issue 5049). Responses are read alike.
pub(crate) fn walk(
    schema: &Schema,
    version: i16,
    body: &[u8],
    max_elements: usize,
) -> Result<usize, WalkError> {
    let mut w = Walker {
        b: body,
        pos: 0,
        version,
        flexible: version >= schema.flexible_from,
        elements_left: max_elements,
    };
    w.fields(schema.fields)?;
    Ok(w.pos)
}

/// [`walk`], requiring the message to take the whole body.
#[cfg(test)]
pub(crate) fn walk_exact(
    schema: &Schema,
    version: i16,
    body: &[u8],
    max_elements: usize,
) -> Result<(), WalkError> {
    let used = walk(schema, version, body, max_elements)?;
    if used != body.len() {
        return Err(WalkError {
            at: used,
            what: "bytes left after the message",
        });
    }
    Ok(())
}

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
    elements_left: usize,
}

impl Walker<'_> {
    fn err(&self, what: &'static str) -> WalkError {
        WalkError { at: self.pos, what }
    }

    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), WalkError> {
        if n > self.left() {
            return Err(self.err("a field runs past the end"));
        }
        self.pos += n;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WalkError> {
        let s = self
            .b
            .get(self.pos..self.pos + N)
            .ok_or_else(|| self.err("a field runs past the end"))?;
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn uvarint(&mut self) -> Result<u32, WalkError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let [byte] = self.fixed::<1>()?;
            if i == 4 && byte > 0x0f {
                return Err(self.err("varint too long"));
            }
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("varint too long"))
    }

    /// A length (or count) prefix: `None` for null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, WalkError> {
        if self.flexible {
            return Ok(match self.uvarint()? {
                0 => None,
                n => Some(n as usize - 1),
            });
        }
        let n = if wide {
            i64::from(i32::from_be_bytes(self.fixed()?))
        } else {
            i64::from(i16::from_be_bytes(self.fixed()?))
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(self.err("negative length")),
            n => Ok(Some(n as usize)),
        }
    }

    fn fields(&mut self, fields: &[Field]) -> Result<(), WalkError> {
        let version = self.version;
        let present = |f: &&Field| f.versions.0 <= version && version <= f.versions.1;
        for f in fields.iter().filter(|f| f.tag.is_none()).filter(present) {
            self.value(&f.ty)?;
        }
        if self.flexible {
            self.tagged(fields)?;
        }
        Ok(())
    }

    /// The tagged-field section: known tags are walked inside their declared size.
    fn tagged(&mut self, fields: &[Field]) -> Result<(), WalkError> {
        let count = self.uvarint()? as usize;
        if count > MAX_TAGGED_FIELDS {
            return Err(self.err("more than 10,000 tagged fields in one section (Kafka's limit)"));
        }
        if count > self.left() {
            return Err(self.err("more tagged fields than bytes"));
        }
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.left() {
                return Err(self.err("a tagged field runs past the end"));
            }
            let known = fields.iter().find(|f| {
                f.tag == Some(tag) && f.versions.0 <= self.version && self.version <= f.versions.1
            });
            match known {
                Some(f) => {
                    let end = self.pos + size;
                    let outer = self.b;
                    self.b = &outer[..end];
                    let walked = self.value(&f.ty);
                    self.b = outer;
                    walked?;
                    if self.pos != end {
                        return Err(self.err("a tagged field's size does not match its value"));
                    }
                }
                None => self.skip(size)?,
            }
        }
        Ok(())
    }

    fn value(&mut self, ty: &Ty) -> Result<(), WalkError> {
        match ty {
            Ty::Bool | Ty::Int8 => self.skip(1),
            Ty::Int16 => self.skip(2),
            Ty::Int32 => self.skip(4),
            Ty::Int64 => self.skip(8),
            Ty::Uuid => self.skip(16),
            Ty::String => match self.length(false)? {
                Some(n) => self.skip(n),
                None => Ok(()),
            },
            Ty::Bytes | Ty::Records => match self.length(true)? {
                Some(n) => self.skip(n),
                None => Ok(()),
            },
            Ty::Array(element) => {
                let Some(n) = self.length(true)? else {
                    return Ok(());
                };
                if n > MAX_ARRAY_ELEMENTS {
                    return Err(
                        self.err("more than 1,000,000 elements in one array (Kafka's limit)")
                    );
                }
                // Every element takes at least one byte: a larger count is a lie.
                if n > self.left() {
                    return Err(self.err("an array count exceeds the bytes left"));
                }
                if n > self.elements_left {
                    return Err(self.err("too many array elements in one message"));
                }
                self.elements_left -= n;
                for _ in 0..n {
                    self.value(element)?;
                }
                Ok(())
            }
            Ty::Struct(fields) => self.fields(fields),
        }
    }
}

/// Checks a table against the `kafka-protocol` decoder of its message, for the tests of both
/// tables: bodies generated from the table, with every field filled at random, must decode
/// whole and encode back to the same bytes, and the tagged fields the walk skips as unknown
/// must be ones the decoder does not read either (it reads a known tag's value whatever size
/// the tag declares, so a tag the table misses would pass its count unchecked).
#[cfg(test)]
pub(crate) mod check {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::protocol::{Decodable, Encodable};

    /// Decodes `body` as a `T` of `version`, which must use it all, and encodes it back.
    pub(crate) type RoundTrip = fn(i16, &[u8]) -> Result<Vec<u8>, String>;

    pub(crate) fn round_trip<T: Decodable + Encodable>(
        v: i16,
        body: &[u8],
    ) -> Result<Vec<u8>, String> {
        let mut b = Bytes::copy_from_slice(body);
        let message = T::decode(&mut b, v).map_err(|e| format!("does not decode: {e}"))?;
        if !b.is_empty() {
            return Err(format!("{} bytes not read", b.len()));
        }
        let mut out = BytesMut::new();
        message
            .encode(&mut out, v)
            .map_err(|e| format!("does not encode: {e}"))?;
        Ok(out.to_vec())
    }

    /// A tag to put into the tagged section of the struct whose fields start at `at`.
    #[derive(Clone, Copy)]
    struct Probe {
        at: *const Field,
        tag: u32,
        /// The value of this type, or nothing (a declared size of 0).
        value: Option<&'static Ty>,
    }

    /// Writes a random message of a table, xorshift-driven.
    struct Gen {
        out: Vec<u8>,
        state: u64,
        version: i16,
        flexible: bool,
        probe: Option<Probe>,
        probed: bool,
    }

    /// A tag no table uses, for an unknown tagged field.
    const UNKNOWN_TAG: u32 = 99;

    impl Gen {
        fn next(&mut self) -> u64 {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn uvarint(&mut self, mut n: u32) {
            while n >= 0x80 {
                self.out.push((n as u8) | 0x80);
                n >>= 7;
            }
            self.out.push(n as u8);
        }

        fn length(&mut self, n: usize, wide: bool) {
            if self.flexible {
                self.uvarint(n as u32 + 1);
            } else if wide {
                self.out.extend_from_slice(&(n as i32).to_be_bytes());
            } else {
                self.out.extend_from_slice(&(n as i16).to_be_bytes());
            }
        }

        fn random(&mut self, n: usize) {
            for _ in 0..n {
                let byte = self.next() as u8;
                self.out.push(byte);
            }
        }

        /// A value; `tagged` ones are never their type's default (which the encoder leaves
        /// out), so they come back.
        fn value(&mut self, ty: &Ty, tagged: bool) {
            match ty {
                Ty::Bool => {
                    let b = tagged || self.below(2) == 1;
                    self.out.push(u8::from(b));
                }
                Ty::Int8 => self.random(1),
                Ty::Int16 => self.random(2),
                Ty::Int32 => self.random(4),
                Ty::Int64 => self.random(8),
                Ty::Uuid => self.random(16),
                Ty::String => {
                    let n = self.below(4) as usize + usize::from(tagged);
                    self.length(n, false);
                    for _ in 0..n {
                        let c = b'a' + self.below(26) as u8;
                        self.out.push(c);
                    }
                }
                Ty::Bytes | Ty::Records => {
                    let n = self.below(6) as usize + usize::from(tagged);
                    self.length(n, true);
                    self.random(n);
                }
                Ty::Array(element) => {
                    // One element each when probing, so every struct is reached.
                    let n = if self.probe.is_some() {
                        1
                    } else {
                        self.below(3) as usize + usize::from(tagged)
                    };
                    self.length(n, true);
                    for _ in 0..n {
                        self.value(element, false);
                    }
                }
                Ty::Struct(fields) => self.fields(fields),
            }
        }

        fn fields(&mut self, fields: &'static [Field]) {
            let v = self.version;
            let present = |f: &&Field| f.versions.0 <= v && v <= f.versions.1;
            for f in fields.iter().filter(|f| f.tag.is_none()).filter(present) {
                self.value(&f.ty, false);
            }
            if !self.flexible {
                return;
            }
            // (tag, value): every known tag of this version, and an unknown one or the probe.
            let mut tags: Vec<(u32, Option<&'static Ty>)> = fields
                .iter()
                .filter(present)
                .filter_map(|f| f.tag.map(|t| (t, Some(&f.ty))))
                .collect();
            match self.probe {
                Some(p) if std::ptr::eq(p.at, fields.as_ptr()) => {
                    tags.push((p.tag, p.value));
                    self.probed = true;
                }
                Some(_) => {}
                None => tags.push((UNKNOWN_TAG, Some(&Ty::Int32))),
            }
            tags.sort_by_key(|t| t.0);
            self.uvarint(tags.len() as u32);
            for (tag, ty) in tags {
                let mut inner = std::mem::take(&mut self.out);
                if let Some(ty) = ty {
                    self.value(ty, true);
                }
                std::mem::swap(&mut inner, &mut self.out);
                self.uvarint(tag);
                self.uvarint(inner.len() as u32);
                self.out.extend_from_slice(&inner);
            }
        }
    }

    fn generate(schema: &Schema, v: i16, seed: u64, probe: Option<Probe>) -> (Vec<u8>, bool) {
        let mut g = Gen {
            out: Vec::new(),
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            version: v,
            flexible: v >= schema.flexible_from,
            probe,
            probed: false,
        };
        g.fields(schema.fields);
        (g.out, g.probed)
    }

    /// Every struct of a table (the message first), once.
    fn structs(fields: &'static [Field], out: &mut Vec<&'static [Field]>) {
        if out
            .iter()
            .any(|s| std::ptr::eq(s.as_ptr(), fields.as_ptr()))
        {
            return;
        }
        out.push(fields);
        for f in fields {
            let mut ty = &f.ty;
            while let Ty::Array(e) = ty {
                ty = e;
            }
            if let Ty::Struct(fs) = ty {
                structs(fs, out);
            }
        }
    }

    /// Runs every check of `schema` against its decoder; returns how many bodies were tried.
    pub(crate) fn against_decoder(schema: &Schema, decoder: RoundTrip) -> usize {
        let mut tried = 0;
        let (from, to) = schema.versions;
        for v in from..=to {
            let at = |what: &str| format!("{} v{v} {what}", schema.name);
            for seed in 1..=8 {
                let (body, _) = generate(schema, v, seed, None);
                assert_eq!(
                    walk_exact(schema, v, &body, usize::MAX),
                    Ok(()),
                    "{}",
                    at("walk")
                );
                match decoder(v, &body) {
                    Ok(back) => assert!(back == body, "{}: encodes back otherwise", at("random")),
                    Err(e) => panic!("{}: {e}\n{body:02x?}", at("random")),
                }
                tried += 1;
            }
            if v < schema.flexible_from {
                continue;
            }
            let mut all = Vec::new();
            structs(schema.fields, &mut all);
            for fields in all {
                let known: Vec<u32> = fields.iter().filter_map(|f| f.tag).collect();
                // Tags the table does not know are unknown to the decoder too: skipped whole.
                for tag in (0..8).filter(|t| !known.contains(t)) {
                    let probe = Probe {
                        at: fields.as_ptr(),
                        tag,
                        value: None,
                    };
                    let (body, probed) = generate(schema, v, u64::from(tag) + 1, Some(probe));
                    if probed {
                        let decoded = decoder(v, &body).map(|_| ());
                        assert_eq!(decoded, Ok(()), "{}", at(&format!("unknown tag {tag}")));
                        tried += 1;
                    }
                }
                // A known tag outside the versions the table gives it is refused by the decoder,
                // not read.
                for f in fields.iter().filter(|f| f.tag.is_some()) {
                    if f.versions.0 <= v && v <= f.versions.1 {
                        continue;
                    }
                    let tag = f.tag.unwrap_or_default();
                    let probe = Probe {
                        at: fields.as_ptr(),
                        tag,
                        value: Some(&f.ty),
                    };
                    let (body, probed) = generate(schema, v, u64::from(tag) + 1, Some(probe));
                    if probed {
                        assert!(
                            decoder(v, &body).is_err(),
                            "{}",
                            at(&format!("tag {tag} out of its versions"))
                        );
                        tried += 1;
                    }
                }
            }
        }
        tried
    }
}
