"""One reconcile or deletion pass (observe EC2, decide purely, act); no Kopf here.

``worker.reconcile_pass`` serves create, update, resume and the timer;
``deletion.deletion_pass`` the finalizer. Both return a ``common.PassResult``.
"""

from .common import PassResult
from .deletion import deletion_pass
from .worker import reconcile_pass

__all__ = ["PassResult", "deletion_pass", "reconcile_pass"]
