"""The CML side of a reconcile pass (workers with ``spec.cml``): I/O only; decisions in reconcile/cml.py.

``look_ahead`` looks at the controller, before the pass and *outside the worker's lock*
(at most every ``--cml-interval``), once EC2 says the instance is ready: a controller
that does not answer (a timeout, the shared concurrency limit behind others) never holds
up a spec change or a delete of the worker. It leaves the outcome in the worker's
``CMLMemory``. ``CMLStep.begin`` runs before EC2 decides (an idle-stopped worker is held
stopped until woken); ``before_actions`` releases the licence before an operator-made
stop; ``finish`` turns the last look into the worker's health, keeps the activity clock
and stops an idle worker. ``release_before_terminate`` serves the deletion pass.

Secrets (password, licence token) are read from the Kubernetes API when a look
needs them and handed to the CML client only; they never reach status, events,
logs or metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..cml.client import CMLClient, Credentials, Trust
from ..cml.exceptions import (
    CMLAuthenticationException,
    CMLCertificateException,
    CMLLicensingException,
    CMLUnavailableException,
)
from ..cml.models import LicenseStatus, Snapshot
from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..fleet.cml import CMLMemory, CMLService
from ..kube_secrets import SecretNotFound
from ..reconcile import reasons
from ..reconcile.cml import (
    RESET_PIN_ANNOTATION,
    CheckOutcome,
    CMLStatus,
    LicenseStep,
    cml_health,
    endpoint_for,
    gate,
    idle_stop_due,
    idle_stopped_health,
    is_instance_ready,
    license_step,
    lost_sight,
    needs_release,
    pin_for,
    track_activity,
    utcnow,
)
from ..reconcile.cml_spec import CMLSpec, SecretKeyRef
from ..reconcile.conditions import Health, HealthState, health_of, now_rfc3339
from ..reconcile.policy import Decision, Kind, classify
from ..reconcile.spec import SpecError, WorkerSpec, parse_spec
from ..reconcile.actions import Note, Stop, Terminate
from ..reconcile.worker import Observation, Plan, WorkerRef, WorkerStatus, may_touch
from ..runtime import Runtime
from .schedule import held_by_schedule

#: A valid licence is read again every this many looks (it rarely changes; keeps a look under 3 requests).
LICENCE_RECHECK_LOOKS = 5
#: status.cml fields a look itself may change (a pin taken, a registration sent), handed to the pass.
_LOOK_FIELDS = ("certificate_sha256", "certificate_instance_id", "license_requested")
#: Reasons whose arrival is worth a Warning event (once, on the transition).
_WARN_ON = (reasons.CML_UNREACHABLE, reasons.CML_AUTHENTICATION_FAILED, reasons.CML_CERTIFICATE_CHANGED,
            reasons.LICENSE_INVALID)


@dataclass
class CMLStep:
    runtime: Runtime
    ref: WorkerRef
    spec: WorkerSpec
    cml: CMLSpec
    status: CMLStatus
    annotations: Mapping[str, str]
    hold: bool = False
    notes: list[Note] = field(default_factory=list)
    looked: bool = False  # this pass asked the controller (idle stops act only on a fresh look)
    #: resourceVersion of the credentials and CA Secrets as this pass read them (None: not read,
    #: or not there): a refusal remembers the one it hinged on, so only a change of it counts.
    secret_versions: dict[str, str | None] = field(default_factory=dict)

    # ------------------------------------------------------------ before EC2 decides

    @classmethod
    def begin(cls, runtime: Runtime, ref: WorkerRef, spec: WorkerSpec, raw_status: Mapping[str, Any] | None,
              annotations: Mapping[str, str] | None, now: datetime | None = None) -> CMLStep | None:
        if spec.cml is None or runtime.cml is None:
            return None
        status = CMLStatus.from_dict((raw_status or {}).get("cml"))
        decision = gate(spec.cml, status, spec.wants_running, annotations or {}, ref.generation, now or utcnow())
        step = cls(runtime, ref, spec, spec.cml, decision.status, annotations or {}, hold=decision.hold)
        if decision.woken:
            step.notes.append(Note("Normal", reasons.EVENT_WOKEN, "Woken: starting the instance; the idle clock "
                                   "restarts"))
        return step

    @property
    def ec2_spec(self) -> WorkerSpec:
        """The spec EC2 decisions see: held stopped while idle-stopped and not woken."""
        return replace(self.spec, desired_state="Stopped") if self.hold else self.spec

    @property
    def service(self) -> CMLService:
        assert self.runtime.cml is not None
        return self.runtime.cml

    async def before_actions(self, plan: Plan, observation: Observation | None) -> None:
        """Release the licence before an operator-made stop; raises while bounded retries remain."""
        if not any(isinstance(action, Stop | Terminate) for action in plan.actions):
            return
        instance = observation.instance if observation else None
        if instance is None or instance.instance_state != "running" or not needs_release(self.cml, self.status):
            return
        await self._release(instance)

    # ------------------------------------------------------------ after EC2 acted

    async def finish(self, plan: Plan, observation: Observation | None,
                     conditions: tuple[Mapping[str, Any], ...]) -> Plan:
        now = utcnow()
        instance = observation.instance if observation else None
        if self.hold:
            self.status = replace(self.status, ready=False)
            return replace(plan, health=idle_stopped_health(self.status, plan.health))
        if instance is None or instance.instance_state != "running" or not is_instance_ready(plan.health):
            self.status = replace(self.status, ready=False, starting_since=None)
            self._forget_look()  # what CML said before a stop says nothing about the next start
            return plan
        endpoint = endpoint_for(self.cml, instance.public_ip, instance.private_ip)
        if endpoint is None:
            which = "private" if self.cml.address_type == "Private" else "public"
            return replace(plan, health=Health.reconciling(
                reasons.CML_STARTING, f"Instance {instance.aws_instance_id} has no {which} IP address for CML yet"))
        was_ready = self.status.ready
        outcome = self._last_look(endpoint, instance, now)
        if outcome is None:  # no look yet (a new worker, a restart, a new endpoint): the next timer looks
            health = (Health.ready(reasons.CML_READY, f"CML at {endpoint} was ready at the last look")
                      if was_ready else Health.reconciling(reasons.CML_STARTING, f"Waiting for CML at {endpoint}: "
                                                           "not looked at yet"))
            return replace(plan, health=health, poll_soon=True)
        self._record(outcome, instance, now)
        step = license_step(self.cml.license, outcome.snapshot.license if outcome.snapshot else None,
                            self.status.license_requested)
        health = cml_health(outcome, self.status, step, now, self.service.settings.boot_timeout,
                            was_ready=was_ready)
        self.status = replace(self.status, ready=health.state is HealthState.READY)
        if health.state is HealthState.READY and outcome.snapshot is not None and self.looked:
            health = await self._maybe_idle_stop(instance, health, now)
        self._warn_on_transition(health, conditions)
        poll_soon = plan.poll_soon or health.state is not HealthState.READY
        return replace(plan, health=health, poll_soon=poll_soon)

    def status_dict(self) -> dict[str, Any]:
        return self.status.to_dict()

    # ------------------------------------------------------------ looking at the controller

    def _forget_look(self) -> None:
        """Drop the last look (keeping what it changed in status); the next timer looks at once."""
        memory = self.service.memory(self.ref.uid)
        if memory.unread:
            memory.unread = False
            self.status = replace(self.status, **memory.look_changes)
            self.notes.extend(memory.look_notes)
            memory.look_changes, memory.look_notes = {}, []
        memory.last_look, memory.next_look = None, 0.0

    def _last_look(self, endpoint: str, instance: CMLWorkerInstanceDto, now: datetime) -> CheckOutcome | None:
        """The last look ``look_ahead`` made at this endpoint and instance (no CML request here)."""
        memory = self.service.memory(self.ref.uid)
        _, self.status = pin_for(self.status, instance.aws_instance_id, self.annotations.get(RESET_PIN_ANNOTATION))
        last = memory.last_look if isinstance(memory.last_look, CheckOutcome) else None
        if last is None or last.endpoint != endpoint or memory.looked_instance != instance.aws_instance_id:
            return None
        if memory.unread:  # a look this pass is the first to see: take what it changed
            memory.unread, self.looked = False, True
            self.status = replace(self.status, checked_at=now_rfc3339(memory.looked_at or now), endpoint=endpoint,
                                  **memory.look_changes)
            self.notes.extend(memory.look_notes)
            memory.look_changes, memory.look_notes = {}, []
        return last

    async def look_if_due(self, endpoint: str, instance: CMLWorkerInstanceDto, now: datetime) -> None:
        """Outside the worker's lock: one look when due; its outcome and effects wait in memory."""
        memory = self.service.memory(self.ref.uid)
        clock = self.runtime.clock()
        pin, self.status = pin_for(self.status, instance.aws_instance_id,
                                   self.annotations.get(RESET_PIN_ANNOTATION))
        last = memory.last_look if isinstance(memory.last_look, CheckOutcome) else None
        due = (last is None or clock >= memory.next_look or memory.looked_generation != self.ref.generation
               or memory.looked_instance != instance.aws_instance_id or last.endpoint != endpoint
               or self.status.certificate_pin_reset != memory.looked_pin_reset)
        if not due and last is not None and await self._credentials_changed(memory, clock):
            due = True
        if not due:
            return
        memory.looked_generation, memory.looked_instance = self.ref.generation, instance.aws_instance_id
        memory.looked_pin_reset = self.status.certificate_pin_reset
        before = self.status
        async with self.service.semaphore:
            outcome = await self._look_now(memory, endpoint, instance.aws_instance_id, pin)
        changed = {name: getattr(self.status, name) for name in _LOOK_FIELDS
                   if getattr(self.status, name) != getattr(before, name)}
        memory.last_look, memory.looked_at, memory.unread = outcome, now, True
        memory.look_changes = {**memory.look_changes, **changed}
        memory.look_notes = [*memory.look_notes, *self.notes]
        self.notes.clear()

    async def _look_now(self, memory: CMLMemory, endpoint: str, instance_id: str, pin: str | None) -> CheckOutcome:
        settings = self.service.settings
        clock = self.runtime.clock()
        client: CMLClient | None = None
        try:
            client = await self._client(memory, endpoint, instance_id, pin)
            if not memory.seen_ready:
                memory.info = await client.system_information()
                self._keep_pin(client, instance_id)
                if memory.client_key is not None:  # the pin this client just took is the one it keeps using
                    memory.client_key = (*memory.client_key[:4], client.pin if client.ca_pem is None else None)
                if not memory.info.ready:
                    raise CMLUnavailableException(f"CML at {endpoint} says ready: false (still booting)",
                                                  code="NotReady", operation="system_information")
                memory.seen_ready = True
            labs = await client.lab_counts()
            stats = await client.system_stats()
            license_status = await self._licence(client, memory) if self.cml.license else None
            step = license_step(self.cml.license, license_status, self.status.license_requested)
            if step is LicenseStep.INVALID and await self._token_changed(memory):
                self.status, step = replace(self.status, license_requested=False), LicenseStep.REGISTER
            if step is LicenseStep.REGISTER:
                license_status = await self._register(client, license_status, memory)
        except IntegrationException as error:
            if client is not None:
                self._keep_pin(client, instance_id)
            decision = classify(error, slow_recheck_seconds=self.runtime.settings.slow_recheck)
            memory.seen_ready = memory.seen_ready and not isinstance(error, CMLUnavailableException)
            memory.refused_secret, memory.refused_secret_version = self._refused_secret(error)
            memory.secret_checked_at = clock
            memory.next_look = clock + self._retry_after(decision)
            return CheckOutcome(endpoint, info=memory.info, error_message=str(error), decision=decision)
        memory.refused_secret = memory.refused_secret_version = None
        pending = license_status is not None and not license_status.valid
        memory.next_look = clock + (settings.starting_interval if pending else settings.interval)
        return CheckOutcome(endpoint, info=memory.info, snapshot=Snapshot(labs, stats, license_status))

    async def _licence(self, client: CMLClient, memory: CMLMemory) -> LicenseStatus:
        """A valid licence is read again every LICENCE_RECHECK_LOOKS looks only (a look then costs 2 requests)."""
        clock, last = self.runtime.clock(), memory.license_status
        if last is not None and last.valid and clock - memory.license_checked_at < (
                LICENCE_RECHECK_LOOKS * self.service.settings.interval):
            return last
        memory.license_status, memory.license_checked_at = await client.licensing(), clock
        return memory.license_status

    def _retry_after(self, decision: Decision) -> float:
        settings = self.service.settings
        if decision.kind is Kind.TEMPORARY:
            return min(decision.delay or settings.starting_interval, settings.starting_interval)
        return decision.delay if decision.delay is not None else math.inf  # a certificate waits for the annotation

    async def _client(self, memory: CMLMemory, endpoint: str, instance_id: str, pin: str | None) -> CMLClient:
        namespace = self.ref.namespace
        try:
            credentials = await self.service.secrets.read(namespace, self.cml.credentials_secret)
        except SecretNotFound as error:
            raise CMLAuthenticationException(f"{error} (spec.cml.credentialsSecretRef)", code="SecretNotFound",
                                             operation="credentials") from error
        self.secret_versions[credentials.name] = credentials.resource_version
        username, password = credentials.data.get("username"), credentials.data.get("password")
        if not username or not password:
            raise CMLAuthenticationException(
                f"Secret {namespace}/{credentials.name} needs the keys username and password",
                code="SecretIncomplete", operation="credentials")
        ca_pem, ca_version = await self._ca()
        key = (endpoint, instance_id, credentials.resource_version, ca_version, pin if ca_pem is None else None)
        if memory.client is None or memory.client_key != key:
            memory.client = CMLClient(self.service.session(), endpoint, Trust(ca_pem=ca_pem, pin=pin),
                                      Credentials(username, password), timeout=self.service.settings.timeout,
                                      on_call=self.service.on_call)
            memory.client_key, memory.seen_ready = key, False
        return memory.client

    async def _release_client(self, memory: CMLMemory, endpoint: str, instance_id: str,
                              pin: str | None) -> CMLClient:
        """The client for a release: when the credentials Secret is gone, the one this process already has.

        Deleting a namespace deletes its Secrets and its workers at once; the worker's licence must
        still be released with the credentials it was looked at with (kept here, never written anywhere).
        """
        try:
            return await self._client(memory, endpoint, instance_id, pin)
        except CMLAuthenticationException as error:
            last = memory.client
            if error.code != "SecretNotFound" or last is None or memory.client_key is None \
                    or memory.client_key[:2] != (endpoint, instance_id):
                raise
            return last

    async def _ca(self) -> tuple[str | None, str | None]:
        ref = self.cml.ca
        if ref is None:
            return None, None
        try:
            secret = await self.service.secrets.read(self.ref.namespace, ref.name)
        except SecretNotFound as error:
            raise CMLCertificateException(f"{error} (spec.cml.tls.caSecretRef)", code="SecretNotFound",
                                          operation="tls") from error
        self.secret_versions[ref.name] = secret.resource_version
        if not secret.data.get(ref.key):
            raise CMLCertificateException(f"Secret {self.ref.namespace}/{ref.name} has no key {ref.key}",
                                          code="SecretIncomplete", operation="tls")
        return secret.data[ref.key], secret.resource_version

    def _refused_secret(self, error: IntegrationException) -> tuple[str | None, str | None]:
        """The Secret whose change may fix ``error``, and its version as this pass read it (None: missing)."""
        if isinstance(error, CMLAuthenticationException):
            name = self.cml.credentials_secret
        elif isinstance(error, CMLCertificateException) and self.cml.ca is not None:
            name = self.cml.ca.name
        else:
            return None, None
        return name, self.secret_versions.get(name)

    async def _credentials_changed(self, memory: CMLMemory, clock: float) -> bool:
        """While refused: read that Secret's version at most every starting interval; a new one: look now."""
        if memory.refused_secret is None:
            return False
        if clock - memory.secret_checked_at < self.service.settings.starting_interval:
            return False
        memory.secret_checked_at = clock
        try:
            secret = await self.service.secrets.read(self.ref.namespace, memory.refused_secret)
        except (SecretNotFound, IntegrationException):
            return False
        return secret.resource_version != memory.refused_secret_version

    def _keep_pin(self, client: CMLClient, instance_id: str) -> None:
        if client.pin and client.ca_pem is None and client.pin != self.status.certificate_sha256:
            self.status = replace(self.status, certificate_sha256=client.pin, certificate_instance_id=instance_id)
            self.notes.append(Note("Normal", reasons.EVENT_CERTIFICATE_PINNED,
                                   f"Pinned the CML certificate of instance {instance_id}: SHA-256 {client.pin}"))

    async def _register(self, client: CMLClient, current: LicenseStatus | None, memory: CMLMemory) -> LicenseStatus:
        assert self.cml.license is not None
        token, memory.token_version = await self._secret_value(self.cml.license.token,
                                                               "spec.cml.license.tokenSecretRef")
        await client.register_license(token)
        self.status = replace(self.status, license_requested=True)
        memory.license_status = None
        self.notes.append(Note("Normal", reasons.EVENT_LICENSE_REGISTERED, "Licence registration sent to CML"))
        return LicenseStatus("IN_PROGRESS", current.authorization if current else "UNKNOWN")

    async def _token_changed(self, memory: CMLMemory) -> bool:
        """A refused token: a new version of its Secret is worth one more registration."""
        assert self.cml.license is not None
        try:
            _, version = await self._secret_value(self.cml.license.token, "spec.cml.license.tokenSecretRef")
        except IntegrationException:
            return False
        return version != memory.token_version

    async def _secret_value(self, ref: SecretKeyRef, field_name: str) -> tuple[str, str]:
        try:
            secret = await self.service.secrets.read(self.ref.namespace, ref.name)
        except SecretNotFound as error:
            raise CMLLicensingException(f"{error} ({field_name})", code="SecretNotFound", operation="licensing",
                                        retryable=False) from error
        value = secret.data.get(ref.key)
        if not value:
            raise CMLLicensingException(f"Secret {self.ref.namespace}/{ref.name} has no key {ref.key} ({field_name})",
                                        code="SecretIncomplete", operation="licensing", retryable=False)
        return value.strip(), secret.resource_version

    def _record(self, outcome: CheckOutcome, instance: CMLWorkerInstanceDto, now: datetime) -> None:
        status = self.status
        if outcome.info is not None:
            status = replace(status, version=outcome.info.version or status.version)
        snapshot = outcome.snapshot
        if snapshot is None:
            self.status = lost_sight(replace(status, starting_since=status.starting_since or now_rfc3339(now)))
            return
        status = replace(status, starting_since=None, labs_total=snapshot.labs.total,
                         labs_running=snapshot.labs.running, running_nodes=snapshot.stats.running_nodes,
                         cpu_percent=snapshot.stats.cpu_percent, memory_percent=snapshot.stats.memory_percent)
        if snapshot.license is not None:
            status = replace(status, license_registration=snapshot.license.registration,
                             license_authorization=snapshot.license.authorization)
        if not self.looked:  # the last look reused: nothing new was watched
            self.status = status
            return
        self.status = track_activity(status, snapshot, now, self.service.settings.interval)
        if self.status.activity_unknown and not status.activity_unknown:
            self.notes.append(Note("Warning", reasons.EVENT_CML_ACTIVITY_UNKNOWN,
                                   f"CML at {outcome.endpoint} answered without the lab states or node counts the "
                                   "idle rule reads (or in another shape): activity unknown, so no idle stop"))

    # ------------------------------------------------------------ idle stop and licence release

    async def _maybe_idle_stop(self, instance: CMLWorkerInstanceDto, health: Health, now: datetime) -> Health:
        minutes = idle_stop_due(self.cml, self.status, now)
        if minutes is None or not self.spec.wants_running:
            return health
        instance_id = instance.aws_instance_id
        try:
            if not await self._still_ours(instance):
                return health
            if needs_release(self.cml, self.status):
                await self._release(instance)
            await self.runtime.ec2.stop_instance(self.spec.region, instance_id)
        except IntegrationException as error:
            decision = classify(error, slow_recheck_seconds=self.runtime.settings.slow_recheck)
            self.notes.append(Note("Warning", decision.reason, f"Idle stop postponed: {error}"))
            return Health.reconciling(decision.reason, f"Idle stop postponed: {error}")
        self.status = replace(self.status, idle_stopped_at=now_rfc3339(now),
                              idle_stopped_generation=self.ref.generation, ready=False)
        self.runtime.metrics.idle_stops.inc()
        self.notes.append(Note("Normal", reasons.EVENT_IDLE_STOPPED,
                               f"Stopped instance {instance_id} after {minutes:.0f} min without activity "
                               f"(spec.cml.idleStop.afterMinutes {self.cml.idle_after_minutes})"))
        try:  # read the new state now, so the next pass does not see a stale "running"
            await self.runtime.observers(self.spec.region).observe(instance_id, max_age=0, hot=True)
        except IntegrationException:
            pass
        return idle_stopped_health(self.status, Health.ready(reasons.INSTANCE_STOPPED, "stopping"))

    async def _still_ours(self, instance: CMLWorkerInstanceDto) -> bool:
        """The instance's tags read now, not from the cache: someone may have handed it over meanwhile."""
        fresh = await self.runtime.observers(self.spec.region).observe(instance.aws_instance_id, max_age=0)
        current = fresh.instance
        if current is not None and may_touch(self.ref, self.spec, WorkerStatus(instance_id=instance.aws_instance_id),
                                             current).ours:
            return True
        self.notes.append(Note("Warning", reasons.EVENT_IDLE_STOP_SKIPPED,
                               f"Idle stop of {instance.aws_instance_id} skipped: its tags no longer name this worker"))
        return False

    async def _release(self, instance: CMLWorkerInstanceDto) -> None:
        """Deregister the licence; after ``release_attempts`` failures let the stop go ahead with a Warning."""
        memory = self.service.memory(self.ref.uid)
        attempts = self.service.settings.release_attempts
        endpoint = endpoint_for(self.cml, instance.public_ip, instance.private_ip)
        try:
            if endpoint is None:
                raise CMLUnavailableException("no address for CML", code="NoAddress", operation="licensing")
            pin, _ = pin_for(self.status, instance.aws_instance_id, None)
            async with self.service.semaphore:
                client = await self._release_client(memory, endpoint, instance.aws_instance_id, pin)
                if client.ca_pem is None and not client.pin:
                    await client.system_information()
                await client.deregister_license()
        except IntegrationException as error:
            memory.release_failures += 1
            if memory.release_failures < attempts:
                raise CMLLicensingException(
                    f"Releasing the CML licence before stopping failed ({memory.release_failures}/{attempts}): "
                    f"{error}", code="DeregistrationFailed", operation="licensing/deregistration") from error
            memory.release_failures = 0
            self.notes.append(Note("Warning", reasons.EVENT_LICENSE_RELEASE_FAILED,
                                   f"Could not release the CML licence after {attempts} attempts ({error}); "
                                   "stopping anyway: release it in Cisco Smart Software Manager"))
            return
        memory.release_failures, memory.license_status = 0, None
        self.status = replace(self.status, license_registration="NOT_REGISTERED", license_authorization="EVAL",
                              license_requested=False)
        self.notes.append(Note("Normal", reasons.EVENT_LICENSE_RELEASED,
                               f"Released the CML licence of instance {instance.aws_instance_id} before stopping it"))

    def _warn_on_transition(self, health: Health, conditions: tuple[Mapping[str, Any], ...]) -> None:
        if health.reason not in _WARN_ON:
            return
        previous = health_of(conditions)
        if previous is None or previous.reason != health.reason:
            self.notes.append(Note("Warning", health.reason, health.message))


async def look_ahead(runtime: Runtime, ref: WorkerRef, raw_spec: Mapping[str, Any] | None,
                     raw_status: Mapping[str, Any] | None, annotations: Mapping[str, str] | None) -> None:
    """Before a timer pass, outside the worker's lock: look at its controller when a look is due.

    Only for a worker whose instance the region observer last saw running with both status
    checks ok (the pass looks at CML only then). Looks of one worker never overlap.
    """
    if runtime.cml is None:
        return
    try:
        spec = parse_spec(raw_spec)
    except SpecError:
        return
    instance_id = (raw_status or {}).get("instanceId")
    if spec.cml is None or not isinstance(instance_id, str):
        return
    observation = runtime.observers(spec.region).cached(instance_id)
    instance = observation.instance if observation else None
    if observation is None or instance is None or instance.instance_state != "running":
        return
    if observation.checks is not None and not observation.checks.all_ok:
        return
    if held_by_schedule(raw_spec, spec, raw_status, annotations, utcnow()):
        return  # stopped by spec.schedule: a look now could register the licence its stop just released
    step = CMLStep.begin(runtime, ref, spec, raw_status, annotations)
    if step is None or step.hold:
        return
    endpoint = endpoint_for(step.cml, instance.public_ip, instance.private_ip)
    if endpoint is None:
        return
    async with step.service.memory(ref.uid).look_lock:
        await step.look_if_due(endpoint, instance, utcnow())


async def release_before_terminate(runtime: Runtime, ref: WorkerRef, spec: WorkerSpec,
                                   raw_status: Mapping[str, Any] | None,
                                   observation: Observation) -> list[Note]:
    """Deletion: release the licence of a running instance before it is terminated (bounded)."""
    step = CMLStep.begin(runtime, ref, spec, raw_status, None)
    instance = observation.instance
    if step is None or instance is None or instance.instance_state != "running":
        return []
    if not needs_release(step.cml, step.status):
        return []
    await step._release(instance)
    return step.notes
