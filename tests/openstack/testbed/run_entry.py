"""Run a console-script entry point of one of Debian's python3-* OpenStack libraries.

Some commands (cinder-api, cinder-manage, neutron-server, glance-api, the nova services) have their
/usr/bin wrapper only in a service package (cinder-api, neutron-server, ...). Those packages bring
debconf prompts, init scripts and auto-started daemons, so the test bed does not install them and
calls the same entry point directly instead.

usage: run_entry.py module:function program-name [args...]
"""

import importlib
import sys

target, name = sys.argv[1], sys.argv[2]
module, func = target.split(":")
# The program name matters: oslo.config derives the default project and log names from argv[0].
sys.argv = [name, *sys.argv[3:]]
sys.exit(getattr(importlib.import_module(module), func)())
