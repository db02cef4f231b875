"""Condition and event reasons: contracts that users, docs and alerts match on (CamelCase)."""

# Ready=True
INSTANCE_READY = "InstanceReady"  # running, both status checks ok
INSTANCE_STOPPED = "InstanceStopped"  # stopped, as desired

# Reconciling=True: working towards the spec
PROVISIONING = "Provisioning"
STARTING = "Starting"
STOPPING = "Stopping"
RESIZING = "Resizing"
UPDATING = "Updating"
WAITING_FOR_TRANSITION = "WaitingForTransition"
STATUS_CHECKS_PENDING = "StatusChecksPending"
DELETING = "Deleting"
# Reconciling=True: retrying a temporary error
INSUFFICIENT_CAPACITY = "InsufficientCapacity"
THROTTLED = "Throttled"
INSTANCE_CREATION_FAILED = "InstanceCreationFailed"
INSTANCE_OPERATION_FAILED = "InstanceOperationFailed"
TAG_OPERATION_FAILED = "TagOperationFailed"
INTEGRATION_ERROR = "IntegrationError"

# Stalled=True: blocked until something outside the operator changes
INVALID_PARAMETER = "InvalidParameter"
QUOTA_EXCEEDED = "QuotaExceeded"
AUTHENTICATION_FAILED = "AuthenticationFailed"
INSTANCE_NOT_FOUND = "InstanceNotFound"

# The False side of Reconciling and Stalled
NOT_RECONCILING = "NotReconciling"
NOT_STALLED = "NotStalled"

# Events only (Normal unless noted)
EVENT_CREATED = "InstanceCreated"
EVENT_ADOPTED = "InstanceAdopted"
EVENT_STARTING = "Starting"
EVENT_STOPPING = "Stopping"
EVENT_RESIZING = "Resizing"
EVENT_RESIZED = "Resized"
EVENT_TAGS_UPDATED = "TagsUpdated"
EVENT_UPDATED = "InstanceUpdated"
EVENT_READY = "Ready"
EVENT_LOST = "InstanceLost"  # Warning: terminated or gone outside the operator
EVENT_TERMINATING = "Terminating"
EVENT_RETAINED = "Retained"
EVENT_RELEASED = "Released"
