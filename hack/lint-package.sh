#!/usr/bin/env bash
# Type-check (mypy --strict) and check the layering contracts (import-linter) on a
# regular install of the package. Our editable install maps
# batcomputer.{operator,server,training} from top-level folders, which neither tool
# can follow, so both look at a non-editable install made into a scratch folder.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
venv="${VENV:-.venv}"
[[ "${venv}" = /* ]] || venv="${repo}/${venv}"
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
"${venv}/bin/pip" install -q --no-deps --target "${scratch}/site" . 2>/dev/null
rm -rf build
cd "${scratch}/site"
MYPYPATH=. "${venv}/bin/mypy" --config-file "${repo}/pyproject.toml" -p batcomputer
PYTHONPATH=. "${venv}/bin/lint-imports" "${repo}/pyproject.toml"
