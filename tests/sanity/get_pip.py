"""Offline stand-in for ansible-test's pip bootstrap script.

ansible-test downloads get-pip.py from a host CI cannot reach, unless a copy is
cached in ~/.ansible/test/cache/. This script does the same job from what is
already here: pip from the interpreter's own ensurepip, then the requested
packages from the package index. Usage is the same as get-pip.py:
python get_pip.py [pip install options] [packages].
"""
import ensurepip
import subprocess
import sys

ensurepip.bootstrap()
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
