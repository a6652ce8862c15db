#!/usr/bin/env bash
# Rebuild dvc_plots/template.html: DVC's plot page with vega, vega-lite and vega-embed inlined, so
# `dvc plots show` renders offline (DVC's default page loads them from a CDN and is blank offline).
# Used through `dvc config plots.html_template ../dvc_plots/template.html` (path relative to .dvc/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent vega@5 vega-lite@5 vega-embed@6 >/dev/null 2>&1
for f in *.tgz; do mkdir -p "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
{
  echo '<!DOCTYPE html>'
  echo '<html><head><meta charset="utf-8"><title>DVC plots (poseops, offline)</title>'
  for lib in vega vega-lite vega-embed; do
    echo "<script type=\"text/javascript\">"
    for d in "${lib}"-[0-9]*; do [ -d "$d" ] && cat "$d/package/build/${lib}.min.js"; done
    echo "</script>"
  done
  echo '<style>table{border-spacing:15px}body{font-family:sans-serif}</style>'
  echo '</head><body>'
  echo '{plot_divs}'
  echo '</body></html>'
} > "$here/template.html"
ls "$tmp"/*.tgz | xargs -n1 basename
echo "wrote $here/template.html"
