# A plugin that speaks binary messages (docs/PROTOCOL.md §14) with only
# the standard library, using the page's own send_bin and bin_messages.
# TestPythonBin runs it: it sends one bin block to the node named in
# BINPY_TO, then prints the binary messages it receives, in hex.
import json, os, socket, struct, sys


def send_bin(sock, to, msgs, first_id):
    block = b"".join(struct.pack(">I", len(m)) + m for m in msgs)
    line = json.dumps({"op": "send", "id": first_id, "to": to, "bin": len(block)})
    sock.sendall(line.encode() + b"\n" + block)


def bin_messages(block):
    i = 0
    while i < len(block):
        (n,) = struct.unpack_from(">I", block, i)
        yield block[i + 4 : i + 4 + n]
        i += 4 + n


sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["NEARBY_SOCKET"])
r = sock.makefile("rb")
hello = {"op": "hello", "token": os.environ["NEARBY_TOKEN"], "protocol": 1, "features": ["bin"]}
sock.sendall(json.dumps(hello).encode() + b"\n")
welcome = json.loads(r.readline())
if "bin" not in welcome.get("features", []):
    print("no bin in welcome:", welcome, flush=True)
    sys.exit(3)
send_bin(sock, os.environ["BINPY_TO"], [b"hi", b"\x00\n\xff", b""], 1)
print("sent", flush=True)
for line in r:
    f = json.loads(line)
    if f.get("op") == "message" and "bin" in f:
        block = r.read(f["bin"])
        print("from", f["from"], "bin", " ".join(m.hex() or "-" for m in bin_messages(block)), flush=True)
    elif f.get("op") == "message":
        print("from", f["from"], "data", json.dumps(f["data"]), flush=True)
    elif f.get("op") == "error":
        print("error", f["code"], flush=True)
