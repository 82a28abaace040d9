#!/usr/bin/env bash
# Print the value `make install` gives PIP_EXTRA_INDEX_URL (nothing when it should stay unset).
#
#   scripts/pip-extra-index.sh PYTHON TORCH_PIN [TORCH_INDEX_URL]
#
# The lock pins the CPU build of PyTorch (`torch==2.13.0+cpu`), which is on PyTorch's own
# wheel index, not on PyPI. When pip cannot find that pin in the sources it is configured
# with (a local wheel folder, a mirror...), the PyTorch CPU index is added as an extra
# index. A command-line --extra-index-url or a PIP_EXTRA_INDEX_URL variable REPLACES the
# extra-index-url of pip's config files, so the result keeps the extra indexes already in
# force (the variable when set, else pip's config) and appends the PyTorch one to them.
# An empty TORCH_INDEX_URL never adds it.
set -euo pipefail -f

python=${1:?usage: pip-extra-index.sh PYTHON TORCH_PIN [TORCH_INDEX_URL]}
torch_pin=${2:?usage: pip-extra-index.sh PYTHON TORCH_PIN [TORCH_INDEX_URL]}
torch_index=${3:-}

if [[ -n ${PIP_EXTRA_INDEX_URL+set} ]]; then
    extra=$PIP_EXTRA_INDEX_URL
else
    # `pip config list` shows the merged config files, newlines escaped as \n.
    extra="$("$python" -m pip config list 2>/dev/null |
        sed -n -E "s/^(global|install)\.extra-index-url='(.*)'$/\2/p" | sed 's/\\n/ /g' || true)"
fi

if [[ -n $torch_index && " $extra " != *" $torch_index "* ]]; then
    # Resolves the one wheel from the configured sources, downloads nothing big, ~2 s.
    if ! "$python" -m pip install --quiet --dry-run --no-deps --ignore-installed \
        "$torch_pin" >/dev/null 2>&1; then
        echo "$torch_pin is not in pip's configured sources: adding $torch_index" >&2
        extra+=" $torch_index"
    fi
fi

# One line, single spaces (the config may list the indexes on several lines).
echo $extra
