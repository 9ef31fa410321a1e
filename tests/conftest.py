"""Make ``ansible_collections.sr3.hpc_mirror`` importable from a checkout.

The repository root holds ``ansible_collections/sr3/hpc_mirror`` (symlinks to
the collection's content), so putting the root on ``sys.path`` lets tests import
modules and module_utils exactly as Ansible does.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
