"""Offline stand-in for ansible-test's pip bootstrap script.

ansible-test downloads get-pip.py from a host CI cannot reach, unless a copy is
cached in ~/.ansible/test/cache/ (scripts/sanity.sh puts this file there). It
does the same job from what is already here: pip from the interpreter's own
ensurepip, then the requested packages from the package index. ansible-test
runs pip with no configuration files and a filtered environment, so pip is
pointed at the system's CA bundle (which holds any site proxy's CA) instead of
its own. Usage is the same as get-pip.py: python get_pip.py [options] [packages].
"""
import ensurepip
import os
import subprocess
import sys

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


ensurepip.bootstrap()
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
cert = ["--cert", SYSTEM_CA_BUNDLE] if os.path.exists(SYSTEM_CA_BUNDLE) else []
subprocess.check_call([sys.executable, "-m", "pip", "install"] + cert + args)
if cert:
    # Later pip runs in this virtualenv get no --cert: give pip the system bundle.
    subprocess.check_call([sys.executable, "-c", "import shutil, pip._vendor.certifi as certifi; "
                           "shutil.copyfile(%r, certifi.where())" % SYSTEM_CA_BUNDLE])
