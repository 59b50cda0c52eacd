"""gunicorn entry for Keystone; the config directory comes from OS_KEYSTONE_CONFIG_DIR."""

import sys

import oslo_log_fix  # noqa: F401  (must come before any OpenStack import; see there)

# oslo.config parses sys.argv when Keystone initialises; gunicorn's own options would make it exit.
_argv, sys.argv = sys.argv, sys.argv[:1]
from keystone.server.wsgi import initialize_public_application  # noqa: E402

application = initialize_public_application()
sys.argv = _argv
