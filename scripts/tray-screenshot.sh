#!/bin/sh
# tray-screenshot.sh [OUT.png]: take docs/tray.png, a picture of the Nearby
# tray menu in a real panel (xfce4-panel on a virtual X display).
#
# It installs nothing. It needs, on Debian 12:
#   apt-get install -y --no-install-recommends xvfb xfce4-panel xdotool imagemagick x11-utils
# (and dbus, iproute2, util-linux, Go). It must run as root: everything runs
# in a fresh network namespace (scripts/isolated.sh), so the two nodes it
# starts talk over 127.0.0.1 only and never touch a real network.
#
# What it does: builds nearby, nearby-tray and the chat-go example; starts
# two nodes, "desk" and "laptop", on lo with static peers (no mDNS); packs
# and publishes a few plugins (chat-py on desk; chat-go and whiteboard on
# laptop) and runs chat-go on desk; starts Xvfb, a private session bus, an
# xfce4-panel with a seeded one-panel config (systray plugin, no first-run
# dialog) and nearby-tray for desk; waits until the panel's
# StatusNotifierWatcher has registered the icon; clicks the icon, opens the
# Subservices submenu with the keyboard, and saves the screen. Every process
# it starts is stopped by PID on exit. About 10 s once built.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-$ROOT/docs/tray.png}
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac

missing=""
for c in Xvfb xfce4-panel xdotool import xwininfo dbus-daemon busctl ip unshare; do
	command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
if [ -n "$missing" ]; then
	echo "tray-screenshot: missing:$missing" >&2
	echo "install: apt-get install -y --no-install-recommends xvfb xfce4-panel xdotool imagemagick x11-utils dbus systemd iproute2 util-linux" >&2
	exit 1
fi

if [ -z "${NEARBY_ISOLATED:-}" ]; then
	W=$(mktemp -d /tmp/nearby-shot.XXXXXX)
	echo "building into $W/bin" >&2
	CGO_ENABLED=0 go build -o "$W/bin/nearby" ./cmd/nearby
	CGO_ENABLED=0 go build -o "$W/bin/nearby-tray" ./cmd/nearby-tray
	CGO_ENABLED=0 go build -o "$W/bin/chat-go" ./examples/chat-go
	rc=0
	NEARBY_SHOT_DIR=$W scripts/isolated.sh "$0" "$OUT" || rc=$?
	if [ $rc -eq 0 ]; then
		rm -rf "$W"
	else
		echo "tray-screenshot: failed; logs kept in $W (*.log)" >&2
	fi
	exit $rc
fi

# From here on: inside the isolated namespace.
W=$NEARBY_SHOT_DIR
BIN=$W/bin
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	sleep 0.3
	for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
started() { PIDS="$1 $PIDS"; }

# wait_for SECONDS WHAT CMD...: run CMD every 0.1 s until it succeeds.
wait_for() {
	secs=$1 what=$2
	shift 2
	i=0
	while ! "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt $((secs * 10)) ]; then
			echo "tray-screenshot: timed out after ${secs}s waiting for $what" >&2
			exit 1
		fi
		sleep 0.1
	done
}

export HOME=$W/home XDG_CONFIG_HOME=$W/home/.config XDG_CACHE_HOME=$W/home/.cache XDG_DATA_HOME=$W/home/.local/share
export NEARBY_CONFIG=/nonexistent
mkdir -p "$HOME" "$XDG_CONFIG_HOME"
NEARBY_MESH_KEY=$("$BIN/nearby" key new)
export NEARBY_MESH_KEY

# --- a two-node mesh on lo -------------------------------------------------
node() { # node NAME PORT PEERPORT
	mkdir -p "$W/$1/dist"
	"$BIN/nearby" up --state "$W/$1" --name "$1" --listen "127.0.0.1:$2" --peer "127.0.0.1:$3" \
		--no-discovery --no-tray 2>"$W/$1.log" &
	started $!
}
node desk 7101 7102
node laptop 7102 7101
wait_for 10 "the mesh" sh -c "'$BIN/nearby' peers --state '$W/desk' --json | grep -q laptop"

# Plugins: chat-py published on desk; chat-go and whiteboard on laptop.
cp -r examples/chat-go "$W/chat-go"
cp "$BIN/chat-go" "$W/chat-go/chat-go"
mkdir -p "$W/whiteboard"
cat >"$W/whiteboard/nearby.json" <<'EOF'
{"name": "whiteboard", "version": "0.3.0", "label": "Whiteboard",
 "description": "A shared whiteboard (a stand-in for the screenshot)",
 "command": ["./run.sh"], "mode": "local", "protocol": 1}
EOF
printf '#!/bin/sh\nexec sleep 3600\n' >"$W/whiteboard/run.sh"
chmod +x "$W/whiteboard/run.sh"
"$BIN/nearby" pack examples/chat-py -o "$W/desk/dist" --sign --state "$W/desk" >/dev/null
"$BIN/nearby" pack "$W/chat-go" -o "$W/laptop/dist" --sign --state "$W/laptop" >/dev/null
"$BIN/nearby" pack "$W/whiteboard" -o "$W/laptop/dist" --sign --state "$W/laptop" >/dev/null
wait_for 10 "desk to list laptop's plugins" sh -c "'$BIN/nearby' ls --state '$W/desk' --json | grep -q whiteboard"
"$BIN/nearby" run chat-go --state "$W/desk" >/dev/null

# --- a desktop: X, a session bus, a panel -----------------------------------
export DISPLAY=:99
Xvfb :99 -screen 0 800x240x24 -nolisten tcp 2>"$W/xvfb.log" &
started $!
wait_for 10 "Xvfb" xwininfo -root
convert -size 800x240 gradient:'#5e81ac-#2e3440' "$W/bg.png"
display -window root "$W/bg.png" 2>/dev/null || true # sets the root background (and exits 1)

cat >"$W/session.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$W/bus</listen>
  <auth>EXTERNAL</auth>
  <standard_session_servicedirs/>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --config-file="$W/session.conf" --nofork --print-address=1 >"$W/bus.addr" 2>/dev/null &
started $!
wait_for 10 "the session bus" test -S "$W/bus"
DBUS_SESSION_BUS_ADDRESS=unix:path=$W/bus
export DBUS_SESSION_BUS_ADDRESS

# One panel along the top: a spacer, the notification area, a clock.
# Seeding xfconf's file skips the panel's first-run dialog.
mkdir -p "$XDG_CONFIG_HOME/xfce4/xfconf/xfce-perchannel-xml"
cat >"$XDG_CONFIG_HOME/xfce4/xfconf/xfce-perchannel-xml/xfce4-panel.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-panel" version="1.0">
  <property name="configver" type="int" value="2"/>
  <property name="panels" type="array">
    <value type="int" value="1"/>
    <property name="panel-1" type="empty">
      <property name="position" type="string" value="p=6;x=0;y=0"/>
      <property name="length" type="uint" value="100"/>
      <property name="position-locked" type="bool" value="true"/>
      <property name="size" type="uint" value="28"/>
      <property name="icon-size" type="uint" value="20"/>
      <property name="plugin-ids" type="array">
        <value type="int" value="1"/>
        <value type="int" value="2"/>
        <value type="int" value="3"/>
      </property>
    </property>
  </property>
  <property name="plugins" type="empty">
    <property name="plugin-1" type="string" value="separator">
      <property name="expand" type="bool" value="true"/>
      <property name="style" type="uint" value="0"/>
    </property>
    <property name="plugin-2" type="string" value="systray">
      <property name="square-icons" type="bool" value="true"/>
    </property>
    <property name="plugin-3" type="string" value="clock"/>
  </property>
</channel>
EOF
xfce4-panel --disable-wm-check 2>"$W/panel.log" &
started $!
wait_for 15 "the panel's StatusNotifierWatcher" busctl --user --address="$DBUS_SESSION_BUS_ADDRESS" \
	get-property org.kde.StatusNotifierWatcher /StatusNotifierWatcher org.kde.StatusNotifierWatcher IsStatusNotifierHostRegistered

# --- the tray ---------------------------------------------------------------
"$BIN/nearby-tray" --state "$W/desk" 2>"$W/tray.log" &
TRAY=$!
started $TRAY
registered() { # the watcher lists items as UNIQUE-NAME/PATH; ours is the only one
	busctl --address="$DBUS_SESSION_BUS_ADDRESS" get-property org.kde.StatusNotifierWatcher /StatusNotifierWatcher \
		org.kde.StatusNotifierWatcher RegisteredStatusNotifierItems | grep -q '^as [1-9]'
}
wait_for 15 "the icon to be registered" registered
sleep 1 # the panel draws the icon

# Find the icon: the pixels of its blue disc (#1F6FD1) in a first shot.
import -window root "$W/before.png"
xy=$(convert "$W/before.png" txt:- | awk -F'[,: ]+' '/#1F6FD1/ { x += $1; y += $2; n++ } END { if (n) printf "%d %d\n", x / n, y / n }')
if [ -z "$xy" ]; then
	echo "tray-screenshot: the icon is not on the screen (see $W/before.png)" >&2
	exit 1
fi
set -- $xy
xdotool mousemove "$1" "$2" click 1
sleep 0.7
# Open Subservices: Down moves to the first enabled item, Right opens it.
xdotool key Down
sleep 0.2
xdotool key Right
sleep 0.7
import -window root "$OUT"
echo "wrote $OUT (icon at $1,$2)" >&2
