#!/usr/bin/env bash
# Writes charts/torchjob/README.md with helm-docs (built by hack/tools.sh) from Chart.yaml, values.yaml
# and README.md.gotmpl. Every value needs a helm-docs `# --` description (a documented map covers its
# subtree): the script fails naming each key without one. (helm-docs' own strict mode also demands one on
# every map above a documented key, which would say each thing twice.)
#   hack/gen-chart-readme.sh           write the README
#   hack/gen-chart-readme.sh --check   write nothing; exit 1 with a diff when the README is stale
# CHART (default charts/torchjob) picks another chart folder; HELM_DOCS the binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chart=${CHART:-$root/charts/torchjob}
helm_docs=${HELM_DOCS:-$("$root/hack/tools.sh" | sed -n 's/^helm-docs=//p')}
fresh=$(mktemp)
trap 'rm -f "$fresh"' EXIT
"$helm_docs" --chart-search-root "$chart" --sort-values-order file --skip-version-footer \
  --log-level warning --dry-run >"$fresh"
# A values row whose last (description) cell is empty: `| key | type | default |  |`.
undocumented=$(awk -F'|' '/^\| [^-K]/ && NF >= 6 && $(NF-1) ~ /^ *$/ {gsub(/ /, "", $2); print $2}' "$fresh")
if [ -n "$undocumented" ]; then
  echo "values.yaml: no '# --' description for:" $undocumented >&2
  exit 1
fi
if [ "${1:-}" = "--check" ]; then
  diff -u "$chart/README.md" "$fresh" || { echo "$chart/README.md is stale: run hack/gen-chart-readme.sh" >&2; exit 1; }
else
  cp "$fresh" "$chart/README.md"
fi
