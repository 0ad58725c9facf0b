# Sourced by scripts/test and scripts/demo: installs what a fresh Debian machine lacks.
# The test host boots the host's own /usr under systemd-nspawn, so the tools it runs
# (dbus-daemon, machined, setpriv) come from the host's packages too.

if [ "$(id -u)" != 0 ]; then
  echo "error: run as root: the test host boots systemd-nspawn containers" >&2
  exit 2
fi

missing=()
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
command -v machinectl >/dev/null 2>&1 || missing+=(systemd-container)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
# tests/it/attacks.rs: a raw socket and a new link, tried from inside an agent.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v chattr >/dev/null 2>&1 || missing+=(e2fsprogs)
# Tests that fill or break the approvals store, and the cookbook's event-log query.
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
# scripts/verify-units and scripts/check-nix.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
command -v nix-instantiate >/dev/null 2>&1 || missing+=(nix-bin)
# The Debian 13 test host (systemd 257, cgroup v2) is built once with debootstrap.
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# xtask/tests/gen.rs renders every man page with man (man-db pulls in groff-base).
command -v man >/dev/null 2>&1 || missing+=(man-db)
# tests/it/claude.rs runs the real Claude Code CLI, installed from the npm registry below.
command -v npm >/dev/null 2>&1 || missing+=(npm)
# tests/it/cockpit.rs: Cockpit's web service and bridge, its system pages (without them a
# browser gets only the login page), and headless Chromium driven over the DevTools protocol.
# Without their Recommends (PackageKit, udisks, fonts…), which the test needs none of.
lean=()
[ -x /usr/lib/cockpit/cockpit-ws ] || lean+=(cockpit-ws)
command -v cockpit-bridge >/dev/null 2>&1 || lean+=(cockpit-bridge)
[ -d /usr/share/cockpit/systemd ] || lean+=(cockpit-system)
command -v chromium >/dev/null 2>&1 || lean+=(chromium)
if [ ${#lean[@]} -gt 0 ]; then
  echo "==> installing ${lean[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null 2>&1 || rustup component add "${tool#cargo-}"
done

# The real Claude Code CLI for tests/it/claude.rs, pinned, from the npm registry: its
# platform package carries the native binary (no Node.js needed to run it). Kept beside the
# Debian 13 test host tree, bound into test hosts; never on the machine's own PATH.
CLAUDE_CODE_VERSION=2.1.328
CLAUDE_CODE_DIR=/var/cache/hyperhive-testhost/claude-code-$CLAUDE_CODE_VERSION
if [ ! -x "$CLAUDE_CODE_DIR/node_modules/@anthropic-ai/claude-code-linux-x64/claude" ]; then
  echo "==> installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION from npm into $CLAUDE_CODE_DIR"
  mkdir -p "$CLAUDE_CODE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$CLAUDE_CODE_DIR" \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null 2>&1 \
    || npm install --no-audit --no-fund --prefix "$CLAUDE_CODE_DIR" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
fi
export HYPERHIVE_CLAUDE_CODE="$CLAUDE_CODE_DIR/node_modules/@anthropic-ai/claude-code-linux-x64"
