"""gunicorn entry for the Placement API; placement.conf is read from OS_PLACEMENT_CONFIG_DIR.

Placement parses its own (empty) argv, not gunicorn's.
"""

import oslo_log_fix  # noqa: F401  (must come before any OpenStack import; see there)
from placement.wsgi import init_application

application = init_application()
