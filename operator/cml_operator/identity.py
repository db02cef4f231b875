"""Who this operator process is, as other parties see it: events' reporter and the Lease holder."""

from __future__ import annotations

import os
import socket

#: The name events are reported by (`reportingComponent`, `source.component`: the "From" column
#: of `kubectl describe`) and the field manager people see in `kubectl get events`.
COMPONENT = "cml-operator"


def instance_identity() -> str:
    """``<pod or host name>_<pid>``: unique per process, readable in `kubectl get lease` and events.

    POD_NAME comes from the Deployment's downward API; a pod's host name is its name anyway.
    """
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"
