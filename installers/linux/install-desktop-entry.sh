#!/bin/sh
# Add vpdesk to this user's application menu: the .desktop entry (pointing at the vpdesk
# executable beside this script) and its icons, under $XDG_DATA_HOME (~/.local/share).
# `--uninstall` takes them away again. The unpacked folder itself is the installation:
# move it first, then run this. No root needed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
apps=$data/applications
icons=$data/icons/hicolor

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$apps/vpdesk.desktop"
  for icon in "$icons"/*/apps/vpdesk.png "$icons"/scalable/apps/vpdesk.svg; do rm -f "$icon"; done
  echo "vpdesk removed from the application menu"
  exit 0
fi

[ -x "$here/vpdesk" ] || { echo "no vpdesk executable beside $0" >&2; exit 1; }
for png in "$here"/share/icons/hicolor/*/apps/vpdesk.png; do
  size=$(basename "$(dirname "$(dirname "$png")")")
  mkdir -p "$icons/$size/apps"
  cp "$png" "$icons/$size/apps/vpdesk.png"
done
mkdir -p "$icons/scalable/apps" "$apps"
cp "$here/share/icons/hicolor/scalable/apps/vpdesk.svg" "$icons/scalable/apps/vpdesk.svg"
# Exec and TryExec name this folder's executable (quoted: the path may hold spaces).
sed -e "s|^Exec=.*|Exec=\"$here/vpdesk\"|" -e "/^Exec=/a TryExec=$here/vpdesk" \
  "$here/share/applications/vpdesk.desktop" >"$apps/vpdesk.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$icons" || true
echo "vpdesk added to the application menu ($apps/vpdesk.desktop)"
