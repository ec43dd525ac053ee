# shellcheck shell=bash disable=SC1091,SC2154 # vars.sh (written by scripts/rehearse) sets the vars
# rehearse: what the image ships as /opt/rudder-transformer (a measurement, it fails on nothing).
set -euo pipefail
app=/opt/rudder-transformer
size() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { printf "%.1f MB", s / 1e6 }'; }
files() { find "$@" 2>/dev/null | wc -l; }
echo "runtime tree ${app}: $(size "$app"), $(files "$app") files and directories"
echo "  node_modules: $(size "$app/node_modules"), $(files "$app/node_modules") files and directories"
echo "  dist: $(size "$app/dist"), $(files "$app/dist") files and directories"
maps_dist=$(find "$app/dist" -name '*.map' | wc -l)
maps_nm=$(find "$app/node_modules" -name '*.map' | wc -l)
echo "  .map files: dist ${maps_dist} ($(find "$app/dist" -name '*.map' -print0 | du -cb --files0-from=- 2>/dev/null | tail -n 1 | awk '{ printf "%.1f MB", $1 / 1e6 }')), node_modules ${maps_nm} ($(find "$app/node_modules" -name '*.map' -print0 | du -cb --files0-from=- 2>/dev/null | tail -n 1 | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
echo "  node_modules/isolated-vm/build: $([[ -d $app/node_modules/isolated-vm/build ]] && size "$app/node_modules/isolated-vm/build" || echo absent)"
echo "  node_modules/isolated-vm/out/isolated_vm.node: $([[ -f $app/node_modules/isolated-vm/out/isolated_vm.node ]] && size "$app/node_modules/isolated-vm/out/isolated_vm.node" || echo absent)"
echo "  dist/scripts: $([[ -d $app/dist/scripts ]] && echo "$(files "$app/dist/scripts") files and directories" || echo absent)"
