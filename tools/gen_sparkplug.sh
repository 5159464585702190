#!/usr/bin/env bash
# Regenerates agent/picogate/sparkplug/_sparkplug_b_pb2.py{,i} from sparkplug_b.proto (the schema of
# the Sparkplug 3.0 specification, chapter 6, copied unchanged) with protoc from PyPI's grpcio-tools.
#
#   bash tools/gen_sparkplug.sh
#
# The generated module is checked in; the `protobuf` runtime pinned in pyproject.toml must be at
# least the "Protobuf Python Version" the module names (same major version).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEN="${TMPDIR:-/tmp}/picogate-protoc"
TOOLS_VERSION=1.85.1
if [ ! -x "$GEN/bin/python" ] || ! "$GEN/bin/python" -c "import grpc_tools" 2>/dev/null; then
    python3 -m venv "$GEN"
    "$GEN/bin/pip" install -q "grpcio-tools==$TOOLS_VERSION"
fi
cd "$ROOT/agent/picogate/sparkplug"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$GEN/bin/python" -m grpc_tools.protoc -I. --python_out="$OUT" --pyi_out="$OUT" sparkplug_b.proto
mv "$OUT/sparkplug_b_pb2.py" _sparkplug_b_pb2.py
mv "$OUT/sparkplug_b_pb2.pyi" _sparkplug_b_pb2.pyi
echo "generated $(pwd)/_sparkplug_b_pb2.py{,i}"
