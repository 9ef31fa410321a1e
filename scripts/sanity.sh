#!/usr/bin/env bash
# ansible-test sanity on a copy of the committed tree placed where ansible-test
# wants a collection (ansible_collections/sr3/hpc_mirror), without downloads
# other than the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The pip version ansible-test bootstraps into its sanity virtualenvs.
pip_version=$(python -c 'import re, ansible_test._internal.python_requirements as r, inspect
print(re.search(r"pip=.(\d+\.\d+)", inspect.getsource(r)).group(1))')
if [ -n "$pip_version" ]; then
  mkdir -p ~/.ansible/test/cache
  cp tests/sanity/get_pip.py ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
fi
mkdir -p "$scratch/ansible_collections/sr3"
git archive HEAD --prefix=hpc_mirror/ | tar -x -C "$scratch/ansible_collections/sr3"
rm -rf "$scratch/ansible_collections/sr3/hpc_mirror/ansible_collections"
cd "$scratch/ansible_collections/sr3/hpc_mirror"
ansible-test sanity --venv --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$@"
