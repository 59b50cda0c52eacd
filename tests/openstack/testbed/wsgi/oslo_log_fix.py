"""Imported first by the gunicorn entry modules (gthread workers: several native threads).

oslo.log 5.0.1 (Debian bookworm) replaces the logging module's lock with an eventlet green RLock
as soon as eventlet is imported, even when nothing is monkey-patched, which is the case in these
processes. Shared between native threads, that lock can strand a request thread for good
("greenlet.error: cannot switch to a different thread" in the process's *.out log, the request
never answered; seen with Keystone). Later oslo.log releases make that swap only when threads are
monkey-patched; this module does the same.
"""

from oslo_log import log as _log
from oslo_utils import eventletutils as _eventletutils

_original_fix = _log._fix_eventlet_logging


def _fix_only_if_patched():
    if _eventletutils.is_monkey_patched("thread"):
        _original_fix()


_log._fix_eventlet_logging = _fix_only_if_patched
