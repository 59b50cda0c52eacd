"""gunicorn entry for the Octavia API; config and log file come from OCTAVIA_CONF and OCTAVIA_API_LOG."""

import os

import oslo_log_fix  # noqa: F401  (must come before any OpenStack import; see there)
from octavia.api import app as _app

# An explicit argv: oslo.config must not parse gunicorn's command line.
application = _app.setup_app(
    argv=["octavia-api", "--config-file", os.environ["OCTAVIA_CONF"], "--log-file", os.environ["OCTAVIA_API_LOG"]]
)
