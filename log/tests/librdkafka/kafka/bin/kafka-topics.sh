#!/usr/bin/env bash
# A stand-in for Kafka's bin/kafka-topics.sh, which librdkafka's tests run (test_kafka_topics in
# tests/test.c, with KAFKA_PATH pointing at the directory above this one): the forms they use,
# done with the `rill topics` CLI ($RILL, set by .ci/librdkafka-suite).
#   --bootstrap-server B --create --topic T --partitions N --replication-factor R [--config k=v]...
#   --bootstrap-server B --delete --topic T
# Anything else (e.g. --alter --partitions, which `rill topics` does not have) exits 1.
set -euo pipefail
: "${RILL:?RILL must name the rill binary}"
op= topic= bootstrap= partitions=1
configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-server) bootstrap=$2; shift 2 ;;
    --create | --delete | --alter | --list | --describe) op=${1#--}; shift ;;
    --topic) topic=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --replication-factor)
      [ "$2" = 1 ] || { echo "kafka-topics.sh (rill): replication factor $2 on one broker" >&2; exit 1; }
      shift 2 ;;
    --config) configs+=(--config "$2"); shift 2 ;;
    *) echo "kafka-topics.sh (rill): unsupported argument $1" >&2; exit 1 ;;
  esac
done
[ -n "$bootstrap" ] || { echo "kafka-topics.sh (rill): --bootstrap-server is required" >&2; exit 1; }
case "$op" in
  create) exec "$RILL" topics --bootstrap-server "$bootstrap" create "$topic" --partitions "$partitions" "${configs[@]}" ;;
  delete) exec "$RILL" topics --bootstrap-server "$bootstrap" delete "$topic" ;;
  *) echo "kafka-topics.sh (rill): --$op is not supported by this stand-in" >&2; exit 1 ;;
esac
