//! A bounded structural check of request bodies before they are decoded.
//!
//! The `kafka-protocol` decoders size vectors from array counts read off the wire, before any
//! element is read: a 20-byte request claiming two billion topics would make them ask for
//! hundreds of gigabytes, and a failed allocation aborts the process. So every request body is
//! first walked against its schema (field types by version, from Kafka's message definitions):
//! each array count must fit in the bytes left (an element takes at least one byte), every
//! length must fit in the frame, and the whole request may hold at most `max_elements` array
//! elements. Only a body that walks cleanly is decoded.

use super::schema_tables::REQUESTS;

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

/// The request schema of one API.
#[derive(Debug)]
pub(crate) struct RequestSchema {
    pub api_key: i16,
    pub name: &'static str,
    /// The versions the schema describes, inclusive.
    pub versions: (i16, i16),
    /// The first flexible version (compact encodings, tagged fields); `i16::MAX` if none.
    pub flexible_from: i16,
    pub fields: &'static [Field],
}

/// Why a request body does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request body at byte {at}: {what}")]
pub struct WalkError {
    pub at: usize,
    pub what: &'static str,
}

/// The schema of `api_key` covering `version`, if there is one.
pub(crate) fn schema(api_key: i16, version: i16) -> Option<&'static RequestSchema> {
    REQUESTS
        .iter()
        .find(|s| s.api_key == api_key && s.versions.0 <= version && version <= s.versions.1)
}

/// Checks that `body` starts with a well-formed `version` request of `schema` holding at
/// most `max_elements` array elements in all; returns how many bytes the request took.
///
/// Bytes after the request are not an error: Kafka's brokers ignore them, and librdkafka
/// relies on it (its Metadata v9+ request for all topics writes a 4-byte null count where a
/// 1-byte varint belongs, librdkafka issue 5049).
pub(crate) fn walk(
    schema: &RequestSchema,
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

/// [`walk`], requiring the request to take the whole body.
#[cfg(test)]
pub(crate) fn walk_exact(
    schema: &RequestSchema,
    version: i16,
    body: &[u8],
    max_elements: usize,
) -> Result<(), WalkError> {
    let used = walk(schema, version, body, max_elements)?;
    if used != body.len() {
        return Err(WalkError {
            at: used,
            what: "bytes left after the request",
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
                // Every element takes at least one byte: a larger count is a lie.
                if n > self.left() {
                    return Err(self.err("an array count exceeds the bytes left"));
                }
                if n > self.elements_left {
                    return Err(self.err("too many array elements in one request"));
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
