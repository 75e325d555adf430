#!/bin/sh
# build.sh: build the chat-go plugin binary into this folder, where its
# nearby.json expects it. Run before `nearby pack examples/chat-go`.
# CGO is off so the binary runs on any Linux node of the same architecture.
set -eu
cd "$(dirname "$0")"
CGO_ENABLED=0 go build -trimpath -o chat-go .
echo "built $(pwd)/chat-go"
