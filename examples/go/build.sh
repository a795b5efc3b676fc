#!/bin/sh
# Build the Go example offline from Debian's packages (golang-go, protoc-gen-go,
# protoc-gen-go-grpc, golang-google-grpc-dev, golang-google-protobuf-dev,
# golang-google-genproto-dev, protobuf-compiler): generate the stubs from proto/ into a
# GOPATH under OUT, then build OUT/bin/producer. GOPATH mode, because Debian ships the Go
# libraries as sources under /usr/share/gocode and this machine has no Go module proxy.
#
#   examples/go/build.sh OUT
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
GEN="$OUT/src/celeriac.dev/gen/go/celeriac/v1"
APP="$OUT/src/celeriac.dev/examples/producer"
rm -rf "$GEN" "$APP"
mkdir -p "$GEN" "$APP"
protoc -I "$ROOT/proto" -I /usr/include \
  --go_out="$GEN" --go_opt=paths=source_relative \
  --go-grpc_out="$GEN" --go-grpc_opt=paths=source_relative \
  "$ROOT"/proto/celeriac/v1/*.proto
# source_relative keeps the proto's folder (celeriac/v1/) under GEN: flatten it into the package.
mv "$GEN"/celeriac/v1/*.go "$GEN"/ && rm -r "$GEN/celeriac"
cp "$HERE"/producer/*.go "$APP"/
cd "$APP"
GO111MODULE=off GOPATH="$OUT:/usr/share/gocode" GOCACHE="$OUT/cache" go build -o "$OUT/bin/producer" .
