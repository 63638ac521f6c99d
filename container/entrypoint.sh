#!/bin/sh
# The meshmedia image's entrypoint, on the linuxserver.io convention: it starts as
# root, gives the user `meshmedia` the ids PUID and PGID (the owner of your folders),
# hands it /config (and an empty /share or /media), and runs the command as that
# user with no way back to root. meshmedia itself never runs as root here.
#
#   serve | sync | doctor ... | --version  ->  meshmedia serve ...
#   a path: /bin/sh, /usr/bin/env ...      ->  that program, as the same user
set -eu

say() { echo "meshmedia-entrypoint: $*" >&2; }

# Words are meshmedia's commands (`sync` is also coreutils' program: not run here).
case "${1:-}" in
  meshmedia | */*) ;;
  *) set -- meshmedia "$@" ;;
esac

if [ -n "${UMASK:-}" ]; then
  case "$UMASK" in
    [0-7][0-7][0-7] | [0-7][0-7][0-7][0-7]) umask "$UMASK" ;;
    *) say "UMASK=$UMASK is not an octal mask such as 022"; exit 64 ;;
  esac
fi

if [ "$(id -u)" != 0 ]; then
  # Started with --user (or rootless without a mapped root): already unprivileged.
  exec "$@"
fi

PUID="${PUID:-1000}"
PGID="${PGID:-1000}"
for id in "$PUID" "$PGID"; do
  case "$id" in
    '' | *[!0-9]*) say "PUID and PGID must be numbers (got PUID=$PUID PGID=$PGID)"; exit 64 ;;
  esac
done
if [ "$PUID" = 0 ]; then
  say "PUID=0 would run meshmedia as root; set PUID/PGID to your folders' owner (id -u, id -g)"
  exit 64
fi

# -o: the ids may already belong to another account (users is 100), as on the host.
[ "$(id -g meshmedia)" = "$PGID" ] || groupmod -o -g "$PGID" meshmedia
[ "$(id -u meshmedia)" = "$PUID" ] || usermod -o -u "$PUID" meshmedia

# The state folder is meshmedia's own: everything in it becomes the user's (only
# what is not already, so a restart does not walk it again).
mkdir -p /config
find /config \( ! -user "$PUID" -o ! -group "$PGID" \) -exec chown -h "$PUID:$PGID" {} +
# The share and the media folder are yours: a new, empty volume is handed over;
# one with files in it is left as it is, with a warning when the user cannot use it
# (a curator reads /share, a client writes /media).
as_user() { setpriv --reuid="$PUID" --regid="$PGID" --clear-groups "$@"; }
for dir in /share /media; do
  [ -d "$dir" ] || continue
  if [ -z "$(ls -A "$dir")" ]; then
    chown "$PUID:$PGID" "$dir" 2>/dev/null \
      || say "warning: cannot hand the empty $dir to PUID=$PUID (mounted read-only?)"
  elif [ "$dir" = /share ] && ! as_user test -r "$dir" -a -x "$dir"; then
    say "warning: $dir is not readable by PUID=$PUID PGID=$PGID"
  elif [ "$dir" = /media ] && ! as_user test -r "$dir" -a -w "$dir" -a -x "$dir"; then
    say "warning: $dir is not writable by PUID=$PUID PGID=$PGID"
  fi
done

export HOME=/config USER=meshmedia
exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups --no-new-privs -- "$@"
