//! Authorized operations (KIP-430) as Kafka reports them with no authorizer configured:
//! every operation the resource type supports (`AclEntry.supportedOperations`), as a bit field
//! of ACL operation codes (`Utils.to32BitField`). The security work replaces this with an
//! authorizer's answers.

/// ACL operation codes (Kafka's `AclOperation`).
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

const fn field(ops: &[u8]) -> i32 {
    let mut bits = 0i32;
    let mut i = 0;
    while i < ops.len() {
        bits |= 1 << ops[i];
        i += 1;
    }
    bits
}

/// A topic's: read, write, create, delete, alter, describe, describe and alter configs.
pub(crate) const TOPIC: i32 = field(&[
    READ,
    WRITE,
    CREATE,
    DELETE,
    ALTER,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);

/// A group's: read, delete, describe, describe and alter configs.
pub(crate) const GROUP: i32 = field(&[READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);

/// The cluster's: create, alter, describe, cluster action, describe and alter configs,
/// idempotent write.
pub(crate) const CLUSTER: i32 = field(&[
    CREATE,
    ALTER,
    DESCRIBE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
]);

#[cfg(test)]
mod tests {
    /// The values Kafka's clients decode for a broker without an authorizer (checked by
    /// hand against `AclOperation` codes and `AclEntry.supportedOperations`).
    #[test]
    fn the_bit_fields_are_kafkas() {
        assert_eq!(super::TOPIC, 3576);
        assert_eq!(super::GROUP, 3400);
        assert_eq!(super::CLUSTER, 8096);
    }
}
