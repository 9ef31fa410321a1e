#!/usr/bin/env bash
# Build the collection tarball, install it in a scratch collections path, and
# check that its playbooks resolve there without the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ansible-galaxy collection build --force --output-path "$scratch" . >/dev/null
tarball=$(ls "$scratch"/sr3-hpc_mirror-*.tar.gz)
if tar -tzf "$tarball" | grep -E '^(tests|molecule|scripts|\.ci|ansible_collections)/|^ansible\.cfg$'; then
  echo "build_ignore let development files into $tarball" >&2; exit 1
fi
# Away from the checkout, whose ansible.cfg already provides sr3.hpc_mirror.
cd "$scratch"
export ANSIBLE_COLLECTIONS_PATH="$scratch/collections"
ansible-galaxy collection install --offline --no-deps -p "$scratch/collections" "$tarball" >/dev/null
for playbook in deploy audit; do
  # community.rabbitmq comes from the ansible package in site-packages.
  ansible-playbook -i localhost, --syntax-check "sr3.hpc_mirror.$playbook"
done
echo "built and installed: $(basename "$tarball")"
