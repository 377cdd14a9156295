//! Serdes: how typed keys and values become the bytes of topics and stores. [`Auto`] follows
//! Kafka's conventions for primitives (UTF-8 strings, big-endian numbers, null for `()` and
//! `None`) and JSON for everything else; [`Json`], [`Bincode`], [`Utf8`], [`RawBytes`],
//! [`I64`] and [`WindowedSerde`] pick one format. Between the operators of one job, values
//! travel as bincode (see [`hop`]): serdes matter only where bytes leave the job (topics) or
//! must be read by another client.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeOwned, Visitor};
use serde::ser::Impossible;
use serde::{Deserialize, Serialize};

/// What keys and values of a job are: serde types that can be cloned and sent to threads.
pub trait Data: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Data for T {}

/// Why bytes and a value did not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SerdeError(pub String);

impl serde::ser::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError(msg.to_string())
    }
}

impl serde::de::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError(msg.to_string())
    }
}

/// Converts `T` to and from the bytes of a record's key or value. `None` bytes are Kafka's
/// null.
pub trait Serde<T>: Send + Sync + 'static {
    /// The bytes of `value` (`None`: null, e.g. for `()` or `Option::None`).
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError>;
    /// The value of `bytes`; `Ok(None)` when they are null and `T` has no null (a record
    /// the operator then skips, as Kafka Streams skips null keys in aggregations).
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError>;
    /// Whether `bytes` hold a value: `deserialize` would give `Ok(Some(_))` (`Ok(false)` for
    /// its `Ok(None)`, the same error for its errors). Sources check every record's key
    /// this way; a serde that can tell without building the value saves that work.
    fn check(&self, bytes: Option<&[u8]>) -> Result<bool, SerdeError> {
        self.deserialize(bytes).map(|v| v.is_some())
    }
}

/// [`Utf8`]'s check: UTF-8, and not null.
fn check_utf8(bytes: Option<&[u8]>) -> Result<bool, SerdeError> {
    match bytes {
        None => Ok(false),
        // ASCII first: a word at a time, cheaper than the full decoder on short keys.
        Some(b) if b.is_ascii() => Ok(true),
        Some(b) => std::str::from_utf8(b)
            .map(|_| true)
            .map_err(|e| SerdeError(format!("not UTF-8: {e}"))),
    }
}

/// A shared serde.
pub type SerdeRef<T> = Arc<dyn Serde<T>>;

/// The serde used when none is given: Kafka's conventions for primitives, JSON otherwise.
///
/// | type | bytes |
/// |---|---|
/// | `String`, `&str`, `char` | UTF-8 (Kafka's `StringSerde`) |
/// | `i64`, `i32`, `i16`, `u64`, `u32`, `u16`, `f64`, `f32` | big-endian, fixed width (`LongSerde`, ...) |
/// | `i8`, `u8`, `bool` | one byte |
/// | `()`, `None` | null (`Some(x)` is `x`'s bytes) |
/// | newtype structs | the inner value's bytes |
/// | anything else (structs, enums, tuples, `Vec`) | JSON |
#[derive(Debug, Clone, Copy, Default)]
pub struct Auto;

impl<T: Data> Serde<T> for Auto {
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        match value.serialize(PrimitiveSer) {
            Ok(bytes) => Ok(bytes),
            Err(NotPrimitive) => serde_json::to_vec(value)
                .map(Some)
                .map_err(|e| SerdeError(e.to_string())),
        }
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        match T::deserialize(AutoDe { bytes }) {
            Ok(v) => Ok(Some(v)),
            Err(_) if bytes.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn check(&self, bytes: Option<&[u8]>) -> Result<bool, SerdeError> {
        // A string key (the usual kind) is checked without allocating it.
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<String>() {
            return check_utf8(bytes);
        }
        Serde::<T>::deserialize(self, bytes).map(|v| v.is_some())
    }
}

/// The default serde of a type: [`Auto`].
pub fn auto<T: Data>() -> SerdeRef<T> {
    Arc::new(Auto)
}

/// JSON (serde_json) for any serde type; null for a JSON `null` (`None`, `()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Data> Serde<T> for Json {
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        let b = serde_json::to_vec(value).map_err(|e| SerdeError(e.to_string()))?;
        Ok((b != b"null").then_some(b))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        match bytes {
            Some(b) => serde_json::from_slice(b)
                .map(Some)
                .map_err(|e| SerdeError(e.to_string())),
            None => Ok(serde_json::from_slice(b"null").ok()),
        }
    }
}

/// bincode 2 (standard configuration: little-endian, variable-length integers) for any serde
/// type: compact and fast, for topics only rill jobs read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl<T: Data> Serde<T> for Bincode {
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map(Some)
            .map_err(|e| SerdeError(e.to_string()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        match bytes {
            Some(b) => hop::decode(b).map(Some),
            None => Ok(None),
        }
    }
}

/// UTF-8 strings (Kafka's `StringSerde`); invalid UTF-8 is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serde<String> for Utf8 {
    fn serialize(&self, value: &String) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.as_bytes().to_vec()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<String>, SerdeError> {
        bytes
            .map(|b| {
                String::from_utf8(b.to_vec()).map_err(|e| SerdeError(format!("not UTF-8: {e}")))
            })
            .transpose()
    }
    fn check(&self, bytes: Option<&[u8]>) -> Result<bool, SerdeError> {
        check_utf8(bytes)
    }
}

/// Bytes as they are (Kafka's `ByteArraySerde`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Serde<Vec<u8>> for RawBytes {
    fn serialize(&self, value: &Vec<u8>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.clone()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(bytes.map(<[u8]>::to_vec))
    }
    fn check(&self, bytes: Option<&[u8]>) -> Result<bool, SerdeError> {
        Ok(bytes.is_some())
    }
}

/// 8-byte big-endian `i64` (Kafka's `LongSerde`).
#[derive(Debug, Clone, Copy, Default)]
pub struct I64;

impl Serde<i64> for I64 {
    fn serialize(&self, value: &i64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<i64>, SerdeError> {
        bytes
            .map(|b| {
                b.try_into()
                    .map(i64::from_be_bytes)
                    .map_err(|_| SerdeError(format!("a long is 8 bytes, not {}", b.len())))
            })
            .transpose()
    }
}

/// A time or session window: `[start, end)` for time windows, `[start, end]` (both
/// inclusive) for session and sliding windows, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// A key of a windowed aggregation: the record key and its window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Windowed<K> {
    pub key: K,
    pub window: Window,
}

impl<K: fmt::Display> fmt::Display for Windowed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@[{}, {})",
            self.key, self.window.start, self.window.end
        )
    }
}

/// A windowed key as the inner key's bytes, then the window's start and end, 8 bytes
/// big-endian each. (Kafka's time-windowed serde writes only the start, its session serde
/// end then start; rill writes both bounds, start first, for every window kind.)
pub struct WindowedSerde<K> {
    inner: SerdeRef<K>,
}

impl<K> WindowedSerde<K> {
    pub fn new(inner: SerdeRef<K>) -> Self {
        WindowedSerde { inner }
    }
}

impl<K> fmt::Debug for WindowedSerde<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WindowedSerde")
    }
}

impl<K: Data> Serde<Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, value: &Windowed<K>) -> Result<Option<Vec<u8>>, SerdeError> {
        let mut b = self.inner.serialize(&value.key)?.unwrap_or_default();
        b.extend_from_slice(&value.window.start.to_be_bytes());
        b.extend_from_slice(&value.window.end.to_be_bytes());
        Ok(Some(b))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<Windowed<K>>, SerdeError> {
        let Some(b) = bytes else { return Ok(None) };
        let short = || {
            SerdeError(format!(
                "a windowed key has 16 bytes of window, not {}",
                b.len()
            ))
        };
        let cut = b.len().checked_sub(16).ok_or_else(short)?;
        let num = |r: &[u8]| i64::from_be_bytes(r.try_into().unwrap_or([0; 8]));
        let key_bytes = &b[..cut];
        // An empty key is null for serdes that have one (a windowed `()` key).
        let key = match self.inner.deserialize(Some(key_bytes))? {
            Some(k) => k,
            None => return Ok(None),
        };
        Ok(Some(Windowed {
            key,
            window: Window {
                start: num(&b[cut..cut + 8]),
                end: num(&b[cut + 8..]),
            },
        }))
    }
}

/// The encoding of values between the operators of a job and in its stores: bincode.
pub mod hop {
    use super::SerdeError;
    use bytes::Bytes;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, SerdeError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map(Bytes::from)
            .map_err(|e| SerdeError(e.to_string()))
    }

    /// Appends `value`'s bytes to `out`.
    pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
            .map(|_| ())
            .map_err(|e| SerdeError(e.to_string()))
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SerdeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| SerdeError(e.to_string()))
    }
}

/// Serializes with `serde` into an owned record field.
pub(crate) fn to_bytes<T: 'static>(
    serde: &dyn Serde<T>,
    value: &T,
) -> Result<Option<Bytes>, SerdeError> {
    Ok(serde.serialize(value)?.map(Bytes::from))
}

/// The value is not a primitive: [`Auto`] falls back to JSON.
#[derive(Debug)]
struct NotPrimitive;

impl fmt::Display for NotPrimitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a primitive")
    }
}
impl std::error::Error for NotPrimitive {}
impl serde::ser::Error for NotPrimitive {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotPrimitive
    }
}

/// Serializes primitives the Kafka way; anything compound is [`NotPrimitive`].
struct PrimitiveSer;

type Out = Result<Option<Vec<u8>>, NotPrimitive>;

fn some(b: impl Into<Vec<u8>>) -> Out {
    Ok(Some(b.into()))
}

impl serde::Serializer for PrimitiveSer {
    type Ok = Option<Vec<u8>>;
    type Error = NotPrimitive;
    type SerializeSeq = Impossible<Self::Ok, NotPrimitive>;
    type SerializeTuple = Impossible<Self::Ok, NotPrimitive>;
    type SerializeTupleStruct = Impossible<Self::Ok, NotPrimitive>;
    type SerializeTupleVariant = Impossible<Self::Ok, NotPrimitive>;
    type SerializeMap = Impossible<Self::Ok, NotPrimitive>;
    type SerializeStruct = Impossible<Self::Ok, NotPrimitive>;
    type SerializeStructVariant = Impossible<Self::Ok, NotPrimitive>;

    fn serialize_bool(self, v: bool) -> Out {
        some([v as u8])
    }
    fn serialize_i8(self, v: i8) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_i16(self, v: i16) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_i32(self, v: i32) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_i64(self, v: i64) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_u8(self, v: u8) -> Out {
        some([v])
    }
    fn serialize_u16(self, v: u16) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_u32(self, v: u32) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_u64(self, v: u64) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_f32(self, v: f32) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_f64(self, v: f64) -> Out {
        some(v.to_be_bytes())
    }
    fn serialize_char(self, v: char) -> Out {
        some(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Out {
        some(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Out {
        some(v)
    }
    fn serialize_none(self) -> Out {
        Ok(None)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Out {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Out {
        Ok(None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Out {
        Ok(None)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Out {
        Err(NotPrimitive)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Out {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Out {
        Err(NotPrimitive)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotPrimitive> {
        Err(NotPrimitive)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotPrimitive> {
        Err(NotPrimitive)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotPrimitive> {
        Err(NotPrimitive)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotPrimitive> {
        Err(NotPrimitive)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotPrimitive> {
        Err(NotPrimitive)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotPrimitive> {
        Err(NotPrimitive)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotPrimitive> {
        Err(NotPrimitive)
    }
}

/// Reads what [`PrimitiveSer`] (or JSON, for compound types) wrote.
struct AutoDe<'a> {
    bytes: Option<&'a [u8]>,
}

impl<'a> AutoDe<'a> {
    fn bytes(&self) -> Result<&'a [u8], SerdeError> {
        self.bytes.ok_or_else(|| SerdeError("null".into()))
    }

    fn fixed<const N: usize>(&self) -> Result<[u8; N], SerdeError> {
        let b = self.bytes()?;
        b.try_into()
            .map_err(|_| SerdeError(format!("expected {N} bytes, got {}", b.len())))
    }

    fn json(&self) -> Result<serde_json::Deserializer<serde_json::de::SliceRead<'a>>, SerdeError> {
        Ok(serde_json::Deserializer::from_slice(self.bytes()?))
    }
}

fn json_err(e: serde_json::Error) -> SerdeError {
    SerdeError(e.to_string())
}

macro_rules! fixed_num {
    ($($method:ident $visit:ident $ty:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
            visitor.$visit(<$ty>::from_be_bytes(self.fixed()?))
        }
    )*};
}

macro_rules! json_forward {
    ($($method:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
            serde::Deserializer::$method(&mut self.json()?, visitor).map_err(json_err)
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for AutoDe<'de> {
    type Error = SerdeError;

    fixed_num! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_f32 visit_f32 f32;
        deserialize_f64 visit_f64 f64;
    }

    json_forward! {
        deserialize_any;
        deserialize_seq;
        deserialize_map;
        deserialize_identifier;
        deserialize_ignored_any;
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        visitor.visit_bool(self.fixed::<1>()?[0] != 0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        let s = std::str::from_utf8(self.bytes()?)
            .map_err(|e| SerdeError(format!("not UTF-8: {e}")))?;
        visitor.visit_borrowed_str(s)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.bytes {
            None => visitor.visit_none(),
            Some(_) => visitor.visit_some(self),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        // Any key reads as `()`: a job that ignores keys should not fail on keyed records.
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        serde::Deserializer::deserialize_tuple(&mut self.json()?, len, visitor).map_err(json_err)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        serde::Deserializer::deserialize_tuple_struct(&mut self.json()?, name, len, visitor)
            .map_err(json_err)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        serde::Deserializer::deserialize_struct(&mut self.json()?, name, fields, visitor)
            .map_err(json_err)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        serde::Deserializer::deserialize_enum(&mut self.json()?, name, variants, visitor)
            .map_err(json_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Data + PartialEq + fmt::Debug>(v: T) -> Option<Vec<u8>> {
        let b = Auto.serialize(&v).unwrap();
        assert_eq!(Auto.deserialize(b.as_deref()).unwrap(), Some(v));
        b
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct PageView {
        page: String,
        user: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct UserId(String);

    /// `check` says what `deserialize` would: a value, a null (`false`), or its error.
    fn agrees<T: Data>(serde: &dyn Serde<T>, inputs: &[Option<&[u8]>]) {
        for &b in inputs {
            let want = serde.deserialize(b).map(|v| v.is_some());
            assert_eq!(serde.check(b), want, "{b:?}");
        }
    }

    #[test]
    fn check_agrees_with_deserialize() {
        let inputs: &[Option<&[u8]>] = &[
            None,
            Some(b""),
            Some(b"key-000001"),
            Some(&[0xff, 0xfe]),
            Some(&[0, 0, 0, 0, 0, 0, 0, 7]),
            Some(br#"{"page":"a","user":1}"#),
        ];
        agrees::<String>(&Auto, inputs);
        agrees::<String>(&Utf8, inputs);
        agrees::<Vec<u8>>(&RawBytes, inputs);
        agrees::<i64>(&Auto, inputs);
        agrees::<Option<String>>(&Auto, inputs);
        agrees::<PageView>(&Json, inputs);
        assert!(Serde::<String>::check(&Auto, Some(&[0xff])).is_err());
        assert_eq!(Serde::<String>::check(&Auto, None), Ok(false));
    }

    #[test]
    fn auto_writes_primitives_as_kafka_does_and_structs_as_json() {
        assert_eq!(
            round("héllo".to_string()),
            Some("héllo".as_bytes().to_vec())
        );
        assert_eq!(round(7i64), Some(vec![0, 0, 0, 0, 0, 0, 0, 7]));
        assert_eq!(round(-2i32), Some(vec![0xff, 0xff, 0xff, 0xfe]));
        assert_eq!(round(1.5f64), Some(1.5f64.to_be_bytes().to_vec()));
        assert_eq!(round(true), Some(vec![1]));
        assert_eq!(round(()), None);
        assert_eq!(round(None::<String>), None);
        assert_eq!(round(Some("x".to_string())), Some(b"x".to_vec()));
        assert_eq!(round(UserId("u1".into())), Some(b"u1".to_vec()));
        let pv = PageView {
            page: "/a".into(),
            user: 3,
        };
        assert_eq!(round(pv), Some(br#"{"page":"/a","user":3}"#.to_vec()));
        assert_eq!(round(vec![1u8, 2]), Some(b"[1,2]".to_vec()));
    }

    #[test]
    fn nulls_and_bad_bytes() {
        // A null for a type without one: skipped by the caller, not an error.
        assert_eq!(Serde::<String>::deserialize(&Auto, None).unwrap(), None);
        assert_eq!(Serde::<i64>::deserialize(&Auto, None).unwrap(), None);
        // Any key reads as `()`.
        assert_eq!(
            Serde::<()>::deserialize(&Auto, Some(b"k")).unwrap(),
            Some(())
        );
        assert!(Serde::<i64>::deserialize(&Auto, Some(b"abc")).is_err());
        assert!(Serde::<String>::deserialize(&Auto, Some(&[0xff, 0xfe])).is_err());
        assert!(Serde::<PageView>::deserialize(&Auto, Some(b"{")).is_err());
        assert!(I64.deserialize(Some(b"1234")).is_err());
        assert!(Utf8.deserialize(Some(&[0xc3])).is_err());
    }

    #[test]
    fn windowed_keys_carry_both_bounds() {
        let s = WindowedSerde::new(auto::<String>());
        let w = Windowed {
            key: "k".to_string(),
            window: Window { start: 10, end: 20 },
        };
        let b = s.serialize(&w).unwrap().unwrap();
        assert_eq!(b.len(), 1 + 16);
        assert_eq!(s.deserialize(Some(&b)).unwrap(), Some(w));
        assert!(s.deserialize(Some(b"short")).is_err());
    }

    #[test]
    fn bincode_and_json_round_trip() {
        let v = (1u32, "x".to_string());
        let b = Bincode.serialize(&v).unwrap();
        assert_eq!(Bincode.deserialize(b.as_deref()).unwrap(), Some(v.clone()));
        let j = Json.serialize(&v).unwrap();
        assert_eq!(j.as_deref(), Some(&br#"[1,"x"]"#[..]));
        assert_eq!(Json.deserialize(j.as_deref()).unwrap(), Some(v));
        assert_eq!(Serde::<Option<u8>>::serialize(&Json, &None).unwrap(), None);
    }
}
