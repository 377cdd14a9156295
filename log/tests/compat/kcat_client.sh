#!/usr/bin/env bash
# Compatibility scenarios with Debian's kcat (librdkafka) against a running rill broker.
# Usage: kcat_client.sh HOST:PORT
set -euo pipefail
B="$1"
RUN="$(date +%s%N | tail -c 9)"
T="kcat-$RUN"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Produce keyed records with a header in every codec (kcat auto-creates the topic).
for z in none gzip snappy lz4 zstd; do
  printf 'k1:%s-1\nk2:%s-2\n' "$z" "$z" | kcat -P -b "$B" -t "$T" -K: -z "$z" -H "codec=$z" -X allow.auto.create.topics=true
done
got="$(kcat -C -b "$B" -t "$T" -e -q -f '%k=%s [%h]\n' | sort)"
want="$(for z in none gzip snappy lz4 zstd; do echo "k1=$z-1 [codec=$z]"; echo "k2=$z-2 [codec=$z]"; done | sort)"
[ "$got" = "$want" ] || fail "consumed:
$got
wanted:
$want"
echo "ok codecs, keys and headers"

# Metadata lists the topic and this broker.
kcat -L -b "$B" -t "$T" | grep -q "topic \"$T\" with 1 partitions" || fail "metadata"
echo "ok metadata"

# Start from a timestamp: three records produced 50 ms apart (create-time stamps); starting
# at the second one's timestamp gives the second one first.
T2="kcat-ts-$RUN"
for i in 1 2 3; do
  echo "at-$i" | kcat -P -b "$B" -t "$T2" -X allow.auto.create.topics=true
  sleep 0.05
done
got="$(kcat -C -b "$B" -t "$T2" -o beginning -e -q -f '%s\n' | wc -l)"
[ "$got" -eq 3 ] || fail "expected 3 records in $T2, got $got"
second_ts="$(kcat -C -b "$B" -t "$T2" -o beginning -c 2 -e -q -f '%T\n' | tail -1)"
from="$(kcat -C -b "$B" -t "$T2" -o "s@$second_ts" -c 1 -e -q -f '%s\n')"
[ "$from" = "at-2" ] || fail "offset by timestamp $second_ts gave '$from'"
echo "ok seek by timestamp"

# A group consumer commits; a second run of the group resumes after the commit.
G="kcat-g-$RUN"
n1="$(timeout 30 kcat -G "$G" -b "$B" -X auto.offset.reset=earliest -c 4 -q -f '%s\n' "$T" | wc -l)"
[ "$n1" -eq 4 ] || fail "first group run read $n1"
n2="$(timeout 30 kcat -G "$G" -b "$B" -X auto.offset.reset=earliest -c 6 -q -f '%s\n' "$T" | wc -l)"
[ "$n2" -eq 6 ] || fail "second group run read $n2"
echo "ok group commits and resume"
