#!/usr/bin/env python3
"""chat-py: an example Nearby plugin in Python 3, standard library only.

It speaks the plugin protocol of docs/PROTOCOL.md directly: newline-delimited
JSON over the unix socket named in NEARBY_SOCKET. It broadcasts a greeting
every CHAT_INTERVAL seconds (default 30; 0 turns it off) and every line it
reads on stdin, prints every message and peer event it receives (the node
keeps stdout in the plugin's log), and offers a tray menu: "Say hello"
broadcasts at once, "Mute" stops the periodic greeting.
"""

import json
import os
import signal
import socket
import sys
import threading

PROTOCOL = 1


class NodeError(Exception):
    """An error frame the node sent instead of welcome."""


class Node:
    """A connection to the node. send_frame is safe from any thread."""

    def __init__(self, path, token):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb")
        self.wlock = threading.Lock()
        self.next_id = 0
        self.send_frame({"op": "hello", "token": token, "protocol": PROTOCOL})
        welcome = self.read_frame()
        if welcome is None:
            raise ConnectionError("node closed the connection before welcome")
        if welcome.get("op") == "error":
            raise NodeError("%s: %s" % (welcome.get("code"), welcome.get("message")))
        self.welcome = welcome
        self.node = welcome["node"]
        self.peers = {p["id"]: p for p in welcome["peers"]}

    def send_frame(self, frame):
        line = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        with self.wlock:
            self.sock.sendall(line.encode("utf-8") + b"\n")

    def read_frame(self):
        """Return the next frame, or None when the node closed the socket."""
        while True:
            line = self.rfile.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            try:
                return json.loads(line)
            except ValueError:
                print("skipping a line that is not JSON", flush=True)

    def _id(self):
        with self.wlock:
            self.next_id += 1
            return self.next_id

    def broadcast(self, data):
        self.send_frame({"op": "broadcast", "id": self._id(), "data": data})

    def send(self, to, data):
        self.send_frame({"op": "send", "id": self._id(), "to": to, "data": data})

    def set_menu(self, items):
        self.send_frame({"op": "menu", "items": items})


def main():
    path, token = os.environ.get("NEARBY_SOCKET"), os.environ.get("NEARBY_TOKEN")
    if not path or not token:
        print("chat-py: run me from a Nearby node (NEARBY_SOCKET, NEARBY_TOKEN unset)", file=sys.stderr)
        return 2
    interval = float(os.environ.get("CHAT_INTERVAL", "30"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    node = Node(path, token)
    me = node.node["name"] or node.node["id"]
    print("chat-py %s on %s (%s), %d peers" % (node.welcome["version"], me, node.node["id"], len(node.peers)), flush=True)

    state = {"muted": False, "count": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def menu():
        with lock:
            muted = state["muted"]
        return [
            {"id": "hello", "label": "Say hello", "enabled": True, "checked": False},
            {"id": "mute", "label": "Mute", "enabled": True, "checked": muted},
        ]

    def hello():
        with lock:
            state["count"] += 1
            n = state["count"]
        node.broadcast({"text": "hello #%d from %s" % (n, me)})

    def periodic():
        while interval > 0 and not stop.wait(interval):
            with lock:
                muted = state["muted"]
            if not muted:
                hello()

    def from_stdin():
        for line in sys.stdin:
            line = line.strip()
            if line:
                node.broadcast({"text": line})

    node.set_menu(menu())
    hello()
    for target in (periodic, from_stdin):
        threading.Thread(target=target, daemon=True).start()

    while True:
        f = node.read_frame()
        if f is None:
            print("node closed the connection", flush=True)
            stop.set()
            return 1
        op = f.get("op")
        if op == "message":
            data = f.get("data")
            text = data.get("text") if isinstance(data, dict) else None
            kind = "to all" if f.get("broadcast") else "to me"
            print("%s (%s) %s: %s" % (f.get("from_name"), f.get("from"), kind, text if text is not None else json.dumps(data)), flush=True)
        elif op == "peer":
            peer = f["peer"]
            if f.get("event") == "up":
                node.peers[peer["id"]] = peer
            else:
                node.peers.pop(peer["id"], None)
            print("peer %s: %s (%s)" % (f.get("event"), peer.get("name"), peer.get("id")), flush=True)
        elif op == "error":
            print("node error %s (id %s): %s" % (f.get("code"), f.get("id"), f.get("message")), flush=True)
        elif op == "click":
            if f.get("item") == "hello":
                hello()
            elif f.get("item") == "mute":
                with lock:
                    state["muted"] = not state["muted"]
                node.set_menu(menu())
        # Unknown ops are ignored: newer nodes may add some.


if __name__ == "__main__":
    sys.exit(main())
