#!/usr/bin/env bash
# Check the layering contracts in pyproject.toml with import-linter.
# import-linter walks a package's folder on disk, and our editable install maps
# batcomputer.{operator,server,training} from top-level folders, so check a
# regular (non-editable) install of the package made into a scratch folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
"${venv}/bin/pip" install -q --no-deps --target "${scratch}/site" . 2>/dev/null
rm -rf build
cd "${scratch}/site"
PYTHONPATH=. "${OLDPWD}/${venv}/bin/lint-imports" --config "${OLDPWD}/pyproject.toml"
