"""Condition and event reasons: contracts that users, docs and alerts match on (CamelCase)."""

# Ready=True
INSTANCE_READY = "InstanceReady"  # running, both status checks ok
INSTANCE_STOPPED = "InstanceStopped"  # stopped, as desired

# Ready=True with spec.cml
CML_READY = "CMLReady"  # the instance is ready, CML says ready, the credentials work (and the licence is valid)
IDLE_STOPPED = "IdleStopped"  # stopped by the idle rule; where the policy wants it until woken

# Reconciling=True: working towards the spec
PROVISIONING = "Provisioning"
STARTING = "Starting"
STOPPING = "Stopping"
RESIZING = "Resizing"
UPDATING = "Updating"
WAITING_FOR_TRANSITION = "WaitingForTransition"
STATUS_CHECKS_PENDING = "StatusChecksPending"
STATUS_CHECK_IMPAIRED = "StatusCheckImpaired"  # running, a status check says impaired (also a Warning event)
DELETING = "Deleting"
PAUSED = "Paused"  # only before the first pass; a paused worker otherwise keeps its conditions
# Reconciling=True: retrying a temporary error
INSUFFICIENT_CAPACITY = "InsufficientCapacity"
THROTTLED = "Throttled"
INSTANCE_CREATION_FAILED = "InstanceCreationFailed"
INSTANCE_OPERATION_FAILED = "InstanceOperationFailed"
TAG_OPERATION_FAILED = "TagOperationFailed"
INTEGRATION_ERROR = "IntegrationError"
CML_STARTING = "CMLStarting"  # the instance runs; its CML controller does not answer ready yet
CML_UNREACHABLE = "CMLUnreachable"  # no answer for --cml-boot-timeout after the instance became ready
LICENSE_REGISTERING = "LicenseRegistering"  # registration sent or in progress
LICENSE_RELEASING = "LicenseReleasing"  # deregistration before a stop failed; retried a few times

# Stalled=True: blocked until something outside the operator changes
INVALID_PARAMETER = "InvalidParameter"
QUOTA_EXCEEDED = "QuotaExceeded"
AUTHENTICATION_FAILED = "AuthenticationFailed"
INSTANCE_NOT_FOUND = "InstanceNotFound"
CML_AUTHENTICATION_FAILED = "CMLAuthenticationFailed"  # 401/403 or the credentials Secret is missing
CML_CERTIFICATE_CHANGED = "CMLCertificateChanged"  # not the pinned certificate (or not trusted by the CA)
LICENSE_INVALID = "LicenseInvalid"  # the controller refused the licence token
OPERATION_NOT_PERMITTED = "OperationNotPermitted"  # termination / stop protection
INSTANCE_OWNED_BY_OTHER = "InstanceOwnedByOther"  # the instance names another worker or cluster
#: Our uid tag, but cml.dev/managed-by or cml.dev/cluster removed: the IAM policy denies every change
MANAGED_TAG_MISSING = "ManagedTagMissing"
LAUNCH_FAILED = "LaunchFailed"  # also Reconciling while backing off between failed launches
START_FAILED = "StartFailed"  # StartInstances fell back to stopped; also Reconciling while backing off
REPLACEMENT_LIMIT_REACHED = "ReplacementLimitReached"
ADOPTION_NOT_ALLOWED = "AdoptionNotAllowed"  # spec.instanceId or an import outside --adoption-namespaces
START_LIMIT_REACHED = "StartLimitReached"  # --max-starts restarts of an instance that stopped by itself this hour
RESIZE_REFUSED = "ResizeRefused"  # EC2 refused the type change: no further stop for it until the spec changes
REGION_CHANGED = "RegionChanged"  # spec.region differs from status.region, where the instance was launched
ACCOUNT_NOT_ALLOWED = "AccountNotAllowed"  # the CMLAccount does not select the namespace, or none does (--require-account)
ACCOUNT_AMBIGUOUS = "AccountAmbiguous"  # several CMLAccounts select the namespace and spec.accountRef names none
ASSUME_ROLE_FAILED = "AssumeRoleFailed"  # STS refused the CMLAccount's role (Reconciling while it is temporary)

# CMLAccount (Ready=True)
ACCOUNT_ASSUMED = "RoleAssumed"  # the role was assumed; status.accountId says which account

# CMLWorkerPool (Ready / Reconciling; a stalled pool carries its children's reason)
POOL_REPLICAS_READY = "ReplicasReady"  # Ready=True: every wanted child exists and is Ready
POOL_SCALING = "Scaling"  # creating or removing children
POOL_REPLICAS_NOT_READY = "ReplicasNotReady"  # the children exist; some are not Ready yet
POOL_ROLLING_UPDATE = "RollingUpdate"  # updateStrategy RollingUpdate: replacing outdated children one at a time
POOL_CREATE_FAILED = "WorkerCreationFailed"  # the API server refused a child (Stalled when it is the template)
POOL_SCALE_DOWN_BLOCKED = "ScaleDownBlocked"  # too many children, the surplus carries cml.dev/do-not-disrupt

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
# Events on a CMLWorkerPool
EVENT_POOL_SCALED_UP = "WorkersCreated"
EVENT_POOL_SCALED_DOWN = "WorkersDeleted"
EVENT_POOL_ROLLED = "TemplateApplied"
# CMLWorkerDiscovery: Ready=True after a scan; events
DISCOVERY_SCANNED = "ScanSucceeded"
EVENT_IMPORTED = "Imported"
EVENT_ORPHAN = "OrphanInstances"  # Warning
EVENT_ORPHAN_STOPPED = "OrphanStopped"
EVENT_ORPHAN_TERMINATED = "OrphanTerminated"
EVENT_IDLE_STOPPED = "IdleStopped"
EVENT_WOKEN = "Woken"
EVENT_CML_ACTIVITY_UNKNOWN = "CMLActivityUnknown"  # Warning: CML's reply lacks what the activity rule reads
EVENT_IDLE_STOP_SKIPPED = "IdleStopSkipped"  # Warning: the instance no longer carries this worker's tags
EVENT_CERTIFICATE_PINNED = "CertificatePinned"
EVENT_LICENSE_REGISTERED = "LicenseRegistered"
EVENT_LICENSE_RELEASED = "LicenseReleased"
EVENT_LICENSE_RELEASE_FAILED = "LicenseReleaseFailed"  # Warning: stopped anyway after bounded retries
EVENT_DUPLICATE = "DuplicateInstance"  # Warning: a second live instance carries the worker's uid
EVENT_PAUSED = "Paused"
EVENT_RESUMED = "Resumed"

# What to do, appended to the message of a condition or Warning with that reason.
HINTS = {
    OPERATION_NOT_PERMITTED: (
        "remove the protection (aws ec2 modify-instance-attribute --instance-id <id> "
        "--no-disable-api-termination, or --no-disable-api-stop); the operator rechecks on its own"
    ),
}


def with_hint(reason: str, message: str) -> str:
    """``message`` plus what to do about ``reason``, when there is a standard answer."""
    hint = HINTS.get(reason)
    return f"{message}; {hint}" if hint else message

# spec.schedule and running hours (docs/schedules.md)
OUTSIDE_SCHEDULE = "OutsideSchedule"  # Ready=True: stopped outside every spec.schedule window, as planned
EVENT_SCHEDULE_START = "ScheduleStart"  # a window (or its pre-warm) began: starting
EVENT_SCHEDULE_STOP = "ScheduleStop"  # outside every window: stopping
EVENT_SCHEDULE_SCALED = "ScheduleScaled"  # a pool's replicas in force changed with its calendar
BUDGET_REACHED = "BudgetReached"  # a pool's spec.limits.maxRunningHoursPerMonth is used up: no new workers
