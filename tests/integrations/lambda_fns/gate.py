"""A gate shared by every loaded copy of the handlers (imported the usual way, so shared)."""

import threading

release = threading.Event()
