"""EC2's clock for the fault proxy: the states moto skips, from one model and one clock.

moto makes a launched or started instance ``running``, a stopped one ``stopped`` and a
terminated one ``terminated`` at once, and reports every status check ``ok``. EC2 does not:

* a launched or started instance is ``pending`` for a while, then ``running``;
* a stopped one is ``stopping``, a terminated one ``shutting-down``;
* DescribeInstanceStatus says ``initializing`` for a while after ``running``;
* a lookup by id right after RunInstances may answer ``InvalidInstanceID.NotFound``
  (EC2's API is eventually consistent);
* StopInstances on a ``pending`` instance and StartInstances on a ``stopping`` one answer
  ``IncorrectInstanceState``, as does a type change before the instance is ``stopped``.

``Ec2Timing`` keeps, per instance the proxy saw change, the phase it is in and when it ends;
every answer that names a state (RunInstances, Start/Stop/TerminateInstances, DescribeInstances,
DescribeInstanceStatus) is rewritten from the same ``state()`` at the same ``now``, so the two
describes agree at every moment. moto stays the source of truth for everything else: when
moto's state is not the one a phase leads to (a test changed moto directly), moto wins.

It also keeps detailed monitoring, which moto cannot switch after launch
(Monitor/UnmonitorInstances are answered here, DescribeInstances shows the result).
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}


@dataclass(frozen=True)
class TimingConfig:
    """Seconds each phase lasts; all 0 is moto's instant world (the model off)."""

    pending: float = 0.0
    stopping: float = 0.0
    shutting_down: float = 0.0
    initializing: float = 0.0
    not_found: float = 0.0  # eventual consistency: id lookups after RunInstances

    @classmethod
    def parse(cls, text: str) -> TimingConfig:
        """``off``, ``test``, ``dev`` or ``pending=1,stopping=1,...`` (a preset, then overrides)."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if part in PRESETS:
                values.update({f.name: getattr(PRESETS[part], f.name) for f in fields(cls)})
            else:
                name, _, value = part.partition("=")
                name = name.strip().replace("-", "_")
                if name not in {f.name for f in fields(cls)}:
                    raise ValueError(f"unknown EC2 timing {name!r}; one of {[f.name for f in fields(cls)]}")
                values[name] = float(value)
        return cls(**values)

    @property
    def on(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))


#: ``test``: short enough for e2e bounds, long enough that every state is seen by a 0.5-1 s poll.
#: ``dev``: the order of a small instance in AWS (a metal one takes minutes), kept short enough for a demo.
PRESETS = {
    "off": TimingConfig(),
    "test": TimingConfig(pending=1.5, stopping=1.5, shutting_down=1.5, initializing=1.5, not_found=0.5),
    "dev": TimingConfig(pending=15, stopping=20, shutting_down=15, initializing=30, not_found=2),
}


@dataclass
class _Phase:
    state: str  # pending | stopping | shutting-down
    target: str  # the state moto reports meanwhile (running | stopped | terminated)
    until: float


@dataclass
class _Record:
    phase: _Phase | None = None
    running_since: float | None = None  # when the last pending ended (status checks initialize from there)
    visible_at: float = 0.0
    monitoring: str | None = None  # set by Monitor/UnmonitorInstances: enabled | disabled


@dataclass
class Refusal:
    code: str
    message: str


@dataclass
class Ec2Timing:
    config: TimingConfig = field(default_factory=TimingConfig)
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def configure(self, config: TimingConfig) -> None:
        with self._lock:
            self.config = config

    # ------------------------------------------------------------------ the model

    def state(self, instance_id: str, moto_state: str, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        with self._lock:
            return self._state(instance_id, moto_state, now)

    def _state(self, instance_id: str, moto_state: str, now: float) -> str:
        record = self._records.get(instance_id)
        phase = record.phase if record else None
        if phase is not None and now < phase.until and moto_state == phase.target:
            return phase.state
        return moto_state

    def _initializing(self, instance_id: str, now: float) -> bool:
        record = self._records.get(instance_id)
        return bool(record and record.running_since is not None
                    and now < record.running_since + self.config.initializing)

    def _begin(self, instance_id: str, state: str, target: str, seconds: float, now: float) -> None:
        record = self._records.setdefault(instance_id, _Record())
        record.phase = _Phase(state, target, now + seconds) if seconds > 0 else None
        record.running_since = (now + seconds) if target == "running" else None

    # ------------------------------------------------------------------ before moto

    def refuse(self, action: str, params: Mapping[str, str], moto_states: Callable[[list[str]], dict[str, str]]
               ) -> Refusal | None:
        """EC2's answer when the call meets an instance in a state moto does not have; None: forward it."""
        now = self.clock()
        ids = instance_ids(params)
        if action in ("DescribeInstances", "DescribeInstanceStatus"):
            with self._lock:
                hidden = [i for i in ids if now < self._records.get(i, _Record()).visible_at]
            if hidden:
                return Refusal("InvalidInstanceID.NotFound", f"The instance ID '{hidden[0]}' does not exist")
            return None
        wanted = {"StopInstances": ("pending", "can be stopped"), "StartInstances": ("stopping", "can be started"),
                  "ModifyInstanceAttribute": ("stopping", "can be modified")}.get(action)
        if wanted is None or not ids or not self.config.on:
            return None
        if action == "ModifyInstanceAttribute" and not any(k.startswith(("InstanceType", "UserData")) for k in params):
            return None
        states = moto_states(ids)
        with self._lock:
            for instance_id in ids:
                if instance_id in states and self._state(instance_id, states[instance_id], now) == wanted[0]:
                    return Refusal("IncorrectInstanceState",
                                   f"The instance '{instance_id}' is not in a state from which it {wanted[1]}.")
        return None

    def answer_monitoring(self, action: str, params: Mapping[str, str], request_id: str) -> bytes:
        """Monitor/UnmonitorInstances, which moto lacks: remember the choice, answer as EC2 does."""
        enabled = action == "MonitorInstances"
        ids = instance_ids(params)
        with self._lock:
            for instance_id in ids:
                self._records.setdefault(instance_id, _Record()).monitoring = "enabled" if enabled else "disabled"
        shown = "pending" if enabled else "disabling"
        items = "".join(f"<item><instanceId>{i}</instanceId><monitoring><state>{shown}</state></monitoring></item>"
                        for i in ids)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NS}"><requestId>{request_id}'
                f"</requestId><instancesSet>{items}</instancesSet></{action}Response>").encode()

    # ------------------------------------------------------------------ moto's answers

    def rewrite(self, action: str, params: Mapping[str, str], payload: bytes) -> bytes:
        """moto's successful answer as EC2 would give it now (unchanged for actions that name no state)."""
        handler = {"RunInstances": self._run, "StartInstances": self._transition,
                   "StopInstances": self._transition, "TerminateInstances": self._transition,
                   "DescribeInstances": self._describe, "DescribeInstanceStatus": self._status}.get(action)
        if handler is None:
            return payload
        root = _parse(payload)
        if root is None:
            return payload
        now = self.clock()
        with self._lock:
            handler(action, params, root, now)
        return _serialize(root)

    def _run(self, action: str, params: Mapping[str, str], root: ET.Element, now: float) -> None:
        for item in _children(root, "instancesSet"):
            instance_id = _text(item, "instanceId")
            self._begin(instance_id, "pending", "running", self.config.pending, now)
            self._records[instance_id].visible_at = now + self.config.not_found
            _set_state(item.find(_q("instanceState")), self._state(instance_id, "running", now))

    def _transition(self, action: str, params: Mapping[str, str], root: ET.Element, now: float) -> None:
        kind = {"StartInstances": ("pending", "running", self.config.pending),
                "StopInstances": ("stopping", "stopped", self.config.stopping),
                "TerminateInstances": ("shutting-down", "terminated", self.config.shutting_down)}[action]
        for item in _children(root, "instancesSet"):
            instance_id = _text(item, "instanceId")
            previous = item.find(_q("previousState"))
            moto_previous = _text(previous, "name") if previous is not None else ""
            shown_previous = self._state(instance_id, moto_previous, now)
            if moto_previous != kind[1]:  # moto moved it: the phase starts now
                self._begin(instance_id, kind[0], kind[1], kind[2], now)
            _set_state(previous, shown_previous)
            _set_state(item.find(_q("currentState")), self._state(instance_id, kind[1], now))

    def _describe(self, action: str, params: Mapping[str, str], root: ET.Element, now: float) -> None:
        for reservation in _children(root, "reservationSet"):
            for item in _children(reservation, "instancesSet"):
                instance_id = _text(item, "instanceId")
                state = item.find(_q("instanceState"))
                if state is not None:
                    _set_state(state, self._state(instance_id, _text(state, "name"), now))
                record = self._records.get(instance_id)
                monitoring = item.find(f"{_q('monitoring')}/{_q('state')}")
                if record and record.monitoring and monitoring is not None:
                    monitoring.text = record.monitoring

    def _status(self, action: str, params: Mapping[str, str], root: ET.Element, now: float) -> None:
        include_all = params.get("IncludeAllInstances", "").lower() == "true"
        container = root.find(_q("instanceStatusSet"))
        if container is None:
            return
        for item in list(container):
            instance_id = _text(item, "instanceId")
            state = item.find(_q("instanceState"))
            shown = self._state(instance_id, _text(state, "name"), now) if state is not None else "running"
            if shown != "running" and not include_all:
                container.remove(item)
                continue
            if state is not None:
                _set_state(state, shown)
            checks = "initializing" if shown == "running" and self._initializing(instance_id, now) else (
                None if shown == "running" else "not-applicable")
            if checks is not None:
                for kind in ("systemStatus", "instanceStatus"):
                    _set_checks(item.find(_q(kind)), checks)

    # ------------------------------------------------------------------ ClientToken replays

    def replay_state(self, payload: bytes, moto_states: Mapping[str, str]) -> tuple[bytes, list[str]]:
        """A remembered RunInstances answer with each instance's state now; and the ids terminated meanwhile."""
        root = _parse(payload)
        if root is None:
            return payload, []
        now = self.clock()
        gone: list[str] = []
        with self._lock:
            for item in _children(root, "instancesSet"):
                instance_id = _text(item, "instanceId")
                shown = self._state(instance_id, moto_states.get(instance_id, "terminated"), now)
                if shown in ("shutting-down", "terminated"):
                    gone.append(instance_id)
                _set_state(item.find(_q("instanceState")), shown)
        return _serialize(root), gone


def instance_ids(params: Mapping[str, str]) -> list[str]:
    """The instance ids a call names (InstanceId, InstanceId.N, and instance ResourceId.N of CreateTags)."""
    ids = [v for k, v in params.items() if k == "InstanceId" or (k.startswith("InstanceId.") and k[11:].isdigit())]
    ids += [v for k, v in params.items() if k.startswith("ResourceId.") and v.startswith("i-")]
    return ids


def _parse(payload: bytes) -> ET.Element | None:
    """moto's XML with the namespace taken off every tag (put back by _serialize), so lookups stay plain."""
    try:
        root = ET.fromstring(payload)
    except ET.ParseError:
        return None
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else NS
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]
    root.set("xmlns", namespace)
    return root


def _serialize(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def _q(tag: str) -> str:
    return tag


def _children(parent: ET.Element, container: str) -> list[ET.Element]:
    found = parent.find(_q(container))
    return list(found) if found is not None else []


def _text(parent: ET.Element | None, tag: str) -> str:
    if parent is None:
        return ""
    found = parent.find(_q(tag))
    return (found.text or "") if found is not None else ""


def _set_state(element: ET.Element | None, name: str) -> None:
    if element is None or name not in STATE_CODES:
        return
    code, label = element.find(_q("code")), element.find(_q("name"))
    if code is not None:
        code.text = str(STATE_CODES[name])
    if label is not None:
        label.text = name


def _set_checks(element: ET.Element | None, status: str) -> None:
    if element is None:
        return
    top = element.find(_q("status"))
    if top is not None:
        top.text = status
    for detail in element.iter(_q("item")):
        value = detail.find(_q("status"))
        if value is not None:
            value.text = status
