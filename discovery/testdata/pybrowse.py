"""Browse _nearby._tcp.local. with python-zeroconf and print one JSON object
per line: {"event": "ready"}, then {"event": "added"|"updated", "name", "port",
"addresses", "txt"} and {"event": "removed", "name"}. Exits when stdin closes
or after argv[1] seconds, whichever comes first. Used by interop_test.go."""
import json
import sys
import threading

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

TYPE = "_nearby._tcp.local."


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raw_txt(text):
    """Split DNS TXT rdata into its strings (properties would merge the s= keys)."""
    out, i = [], 0
    while i < len(text):
        n = text[i]
        out.append(text[i + 1:i + 1 + n].decode("utf-8", "replace"))
        i += 1 + n
    return out


def on_change(zeroconf, service_type, name, state_change):
    if state_change is ServiceStateChange.Removed:
        emit({"event": "removed", "name": name})
        return
    info = zeroconf.get_service_info(service_type, name, timeout=3000)
    if info is None:
        emit({"event": "unresolved", "name": name})
        return
    emit({
        "event": "added" if state_change is ServiceStateChange.Added else "updated",
        "name": name,
        "server": info.server,
        "port": info.port,
        "addresses": info.parsed_addresses(),
        "txt": raw_txt(info.text or b""),
    })


def main():
    limit = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        ServiceBrowser(zc, TYPE, handlers=[on_change])
        emit({"event": "ready"})
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait(limit)
    finally:
        zc.close()


if __name__ == "__main__":
    main()
