#!/bin/sh
# isolated.sh CMD...: run CMD in a fresh network namespace that holds only
# `lo` (multicast on), with private mounts (/run/netns) and its own PID
# namespace, so no test can reach a real network and nothing a test starts
# outlives it. Used by `make test`; see docs/TESTING.md.
set -eu
inner='
set -eu
mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
ip -6 route add ff00::/8 dev lo table local 2>/dev/null || true
export NEARBY_ISOLATED=1
exec "$@"
'
if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
	echo "isolated.sh: needs unshare (util-linux) and ip (iproute2): apt-get install -y util-linux iproute2" >&2
	exit 1
fi
if [ "$(id -u)" = 0 ]; then
	exec unshare --net --mount --pid --fork --mount-proc --propagation private -- sh -c "$inner" sh "$@"
fi
# Not root: a user namespace maps us to root inside it, where allowed.
if unshare -r --net true 2>/dev/null; then
	exec unshare -r --net --mount --pid --fork --mount-proc --propagation private -- sh -c "$inner" sh "$@"
fi
echo "isolated.sh: cannot create an isolated network namespace (not root and user namespaces are disabled)." >&2
echo "Run as root (sudo make test) or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)." >&2
exit 1
