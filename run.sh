#!/usr/bin/env bash
# The README's two set-up commands, for a fresh Linux machine with only Python 3.11+:
#   ./run.sh up     create .venv, install the project, run `pm up` (extra arguments go to pm up)
#   ./run.sh test   create .venv, install the project with its test tools, run ruff and pytest
#                   (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

venv_dir=.venv

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [[ -n "$candidate" ]] || continue
        # Running it, not just finding it: a pyenv shim exists even when its version is not installed.
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    echo "run.sh: needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    return 1
}

# Installs `.` or `.[test]` into .venv, skipping pip when neither pyproject.toml nor the spec changed
# since the last install (pip's own "nothing to do" still takes seconds).
ensure_installed() {
    local spec=$1 stamp want python
    if [[ ! -x "$venv_dir/bin/python" ]]; then
        python=$(find_python)
        "$python" -m venv "$venv_dir" || {
            echo "run.sh: '$python -m venv' failed; on Debian/Ubuntu install the python3-venv package" >&2
            return 1
        }
    fi
    stamp="$venv_dir/.installed-$(echo "$spec" | tr -c 'a-z' '_')"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    PIP_NO_INPUT=1 "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
    echo "$want" >"$stamp"
}

command=${1:-}
[[ $# -gt 0 ]] && shift
case "$command" in
up)
    ensure_installed "."
    exec "$venv_dir/bin/pm" up "$@"
    ;;
test)
    ensure_installed ".[test]"
    "$venv_dir/bin/ruff" check .
    exec "$venv_dir/bin/pytest" "$@"
    ;;
*)
    echo "usage: ./run.sh up | ./run.sh test [pytest arguments]" >&2
    exit 2
    ;;
esac
