"""An HTTP proxy in front of moto_server that counts EC2 calls and injects EC2 errors.

It answers injected faults in EC2's own XML error format, so botocore parses a
real error response exactly as it would from AWS. Everything else is forwarded
to the upstream (moto_server). Calls are counted by EC2 Action and outcome, from
outside the operator, so benchmarks and tests do not trust the operator's counters.

RunInstances idempotency as AWS defines it (moto ignores ClientToken): the proxy
remembers every successful RunInstances by its ClientToken; a repeat with the same
parameters is answered with the original reservation without reaching moto (outcome
``replayed``), one with other parameters with ``IdempotentParameterMismatch``. So a
token that changes between retries shows up as a second instance.

A fault rule's ``effect`` says what a matching call meets:

* ``error`` (default): the error, instead of forwarding the call;
* ``forward_then_error``: moto acts, then the caller gets the error (say InternalError 500);
* ``forward_then_drop``: moto acts, then the connection closes with no answer at all;
* ``empty``: an empty result instead of forwarding (EC2 not listing a new instance yet);
* ``answer``: the rule's ``body`` as a successful (200) answer instead of forwarding, ``{request_id}``
  filled in: EC2 accepting a call whose effect moto never shows (a StartInstances that falls back to
  stopped: answered "pending", while moto keeps reporting the instance stopped).

Control it over HTTP (tests run it as a separate process) or in process:

    PUT    /__faults__   {"rules": [{"action": "RunInstances", "code": "InstanceLimitExceeded", "times": 2}]}
    DELETE /__faults__   clear the rules
    PUT    /__rewrites__ {"rules": [{"action": "DescribeInstanceStatus", "find": "...", "replace": "..."}]}
                         edit moto's successful answers (states moto never reports, e.g. impaired checks)
    PUT    /__kills__    {"rules": [{"action": "RunInstances", "pid": 1234, "when": "after_response"}]}
                         SIGKILL a process around a forwarded call (crash-safety tests)
    GET    /__stats__    {"calls": {"RunInstances": {"200": 3, "fault:InstanceLimitExceeded": 2}}, ...}
    DELETE /__stats__    reset the counters
    GET    /__log__?since=K  {"calls": [[t, action, outcome, [filter names], user agent], ...], "logged": n}:
                         calls after the first K since the reset (t: the proxy's time.monotonic(), when it
                         answered; the User-Agent tells operator replicas apart)
    DELETE /__tokens__   forget the remembered ClientTokens
    PUT    /__timing__   {"timing": "test"} (or "off", "dev", "pending=1,stopping=2,..."): EC2's clock
                         (tests/support/ec2timing.py); DELETE /__timing__ forgets the instances' phases
    PUT    /__iam__      {"access_keys": ["AKIA..."], "policies": ["deploy/iam-policy.json"], "cluster_id": "c"}:
                         evaluate those keys' calls against the policies (tests/support/ec2iam.py);
                         {"access_keys": []} turns it off

The strict world (timing and IAM) answers before moto: an IAM denial is EC2's UnauthorizedOperation
(outcome ``denied:UnauthorizedOperation``), a call the model refuses is counted ``model:<code>``;
Monitor/UnmonitorInstances, which moto lacks, are answered by the model (outcome ``model``).
With timing on, a ClientToken replay carries the instance's state now, and answers
``IdempotentInstanceTerminated`` once that instance is shutting down or terminated.

Run: python -m tests.support.faultproxy --port 0 --upstream http://127.0.0.1:5000 --port-file f
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from tests.support.clienttoken_filter import instance_ids_in, rewrite_client_token_filter
from tests.support.ec2iam import IamConfig, IamEnforcer, Lookups, signer
from tests.support.ec2timing import Ec2Timing, TimingConfig
from tests.support.motoquery import MotoQuery

#: HTTP status EC2 answers each code with; 400 (a client error) for everything not listed.
#: AWS's "Error codes for the Amazon EC2 API" files capacity, throttling and internal codes
#: as server errors (5xx): botocore's standard retry mode retries those itself, so sending
#: them as 400 would hide its retries from call counts.
STATUS_BY_CODE = {
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
    "AccessDenied": 403,
    "Blocked": 403,
    "OptInRequired": 403,
    "RequestLimitExceeded": 503,
    "ServiceUnavailable": 503,
    "Unavailable": 503,
    "InternalError": 500,
    "InternalFailure": 500,
    "InsufficientInstanceCapacity": 500,
    "InsufficientHostCapacity": 500,
    "InsufficientCapacity": 500,
    "InsufficientAddressCapacity": 500,
    "InsufficientVolumeCapacity": 500,
    "InsufficientReservedInstanceCapacity": 500,
    "InsufficientCapacityOnHost": 500,
}


#: Calls kept in the log (GET /__log__): a 1000-worker benchmark makes a few tens of thousands.
LOG_LIMIT = 200_000


@dataclass
class FaultRule:
    """Answer matching calls with an EC2 error instead of forwarding them."""

    code: str
    action: str = "*"  # an EC2 Action name, or * for every call
    message: str = ""
    status: int | None = None  # defaults from STATUS_BY_CODE
    times: int | None = None  # how many calls to fail; None = until cleared
    probability: float = 1.0  # chance that a matching call fails
    codes: list[str] = field(default_factory=list)  # if set, pick one at random per fault
    delay: float = 0.0  # seconds to wait before answering (slow EC2)
    effect: str = "error"  # error | forward_then_error | forward_then_drop | empty (see the module doc)
    #: If set, only calls with a parameter of exactly this value match (say "tag:cml.dev/worker-uid").
    param_value: str = ""
    #: The answer of effect ``answer`` (EC2's XML; ``{request_id}`` is replaced).
    body: str = ""

    def matches(self, action: str, params: dict[str, str] | None = None) -> bool:
        if self.effect not in EFFECTS:
            raise ValueError(f"unknown fault effect {self.effect!r}; one of {sorted(EFFECTS)}")
        return ((self.action == "*" or self.action == action) and (self.times is None or self.times > 0)
                and (not self.param_value or self.param_value in (params or {}).values()))


EFFECTS = frozenset({"error", "forward_then_error", "forward_then_drop", "empty", "answer"})


@dataclass
class RewriteRule:
    """Replace ``find`` with ``replace`` (literal text) in moto's successful answers to ``action``."""

    action: str
    find: str
    replace: str

    def apply(self, action: str, payload: bytes) -> bytes:
        if action != self.action:
            return payload
        return payload.replace(self.find.encode(), self.replace.encode())


def start_accepted_xml(instance_id: str) -> str:
    """StartInstances as EC2 answers it when it accepts the call (the instance goes pending)."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<StartInstancesResponse xmlns="http://ec2.amazonaws.com/doc/'
            '2016-11-15/"><requestId>{request_id}</requestId><instancesSet><item>'
            f"<instanceId>{escape(instance_id)}</instanceId><currentState><code>0</code><name>pending</name>"
            "</currentState><previousState><code>80</code><name>stopped</name></previousState></item>"
            "</instancesSet></StartInstancesResponse>")


#: moto reports every running instance's checks as ok; this makes its instance check impaired.
IMPAIRED_INSTANCE_CHECK = RewriteRule("DescribeInstanceStatus", "<status>ok</status></instanceStatus>",
                                      "<status>impaired</status></instanceStatus>")


@dataclass
class KillRule:
    """SIGKILL ``pid`` when a matching call is forwarded: "before_response" (EC2 acted, the caller
    never hears back) or "after_response" (the caller got the answer, nothing after it ran)."""

    pid: int
    action: str = "RunInstances"
    when: str = "after_response"
    times: int = 1


@dataclass
class _Launch:
    """A successful RunInstances: what was asked (minus the token) and what moto answered."""

    fingerprint: tuple[tuple[str, str], ...]
    status: int
    headers: list[tuple[str, str]]
    payload: bytes


class ClientTokens:
    """RunInstances by ClientToken, as EC2 keeps them; one lock per token so concurrent repeats wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._launches: dict[str, _Launch] = {}
        self._locks: dict[str, threading.Lock] = {}

    def lock(self, token: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(token, threading.Lock())

    def get(self, token: str) -> _Launch | None:
        with self._lock:
            return self._launches.get(token)

    def remember(self, token: str, launch: _Launch) -> None:
        with self._lock:
            self._launches[token] = launch

    def instance_ids(self, token: str) -> list[str]:
        """The instances a launch with ``token`` made (none when it made none here)."""
        launch = self.get(token)
        return instance_ids_in(launch.payload) if launch is not None else []

    def clear(self) -> None:
        with self._lock:
            self._launches.clear()
            self._locks.clear()


def fingerprint(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in params.items() if k != "ClientToken"))


def empty_result_xml(action: str, request_id: str) -> bytes:
    inner = "<reservationSet/>" if action == "DescribeInstances" else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="http://ec2.amazonaws.com/doc/'
            f'2016-11-15/"><requestId>{request_id}</requestId>{inner}</{action}Response>').encode()


def ec2_error_xml(code: str, message: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
    ).encode()


class FaultState:
    """Rules and counters shared by the handler threads."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self.kills: list[KillRule] = []
        self.rewrites: list[RewriteRule] = []
        self.calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        #: (monotonic seconds, action, outcome, filter names) per call since the last reset, newest last.
        self.log: deque[tuple[float, str, str, list[str], str]] = deque(maxlen=LOG_LIMIT)
        self.request = threading.local()  # the User-Agent of the call this handler thread serves
        self.logged = 0  # calls logged since the reset (the log keeps the newest LOG_LIMIT)
        #: Seeds every random choice (which call a probabilistic rule fails, which code it sends), so a
        #: failing run can be replayed; the order calls arrive in is still up to the threads.
        self.seed = random.randrange(2**32) if seed is None else seed
        self._random = random.Random(self.seed)

    def set_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self.rules = list(rules)

    def pick_fault(self, action: str, params: dict[str, str] | None = None) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(action, params) and self._random.random() < rule.probability:
                    if rule.times is not None:
                        rule.times -= 1
                    if rule.codes:
                        return FaultRule(**{**asdict(rule), "code": self._random.choice(rule.codes), "codes": []})
                    return rule
        return None

    def set_rewrites(self, rewrites: list[RewriteRule]) -> None:
        with self._lock:
            self.rewrites = list(rewrites)

    def rewrite(self, action: str, payload: bytes) -> bytes:
        with self._lock:
            rewrites = list(self.rewrites)
        for rule in rewrites:
            payload = rule.apply(action, payload)
        return payload

    def set_kills(self, kills: list[KillRule]) -> None:
        with self._lock:
            self.kills = list(kills)

    def pick_kill(self, action: str) -> KillRule | None:
        with self._lock:
            for kill in self.kills:
                if kill.action == action and kill.times > 0:
                    kill.times -= 1
                    return kill
        return None

    def count(self, action: str, outcome: str, params: dict[str, str] | None = None) -> None:
        filters = [v for k, v in (params or {}).items() if k.startswith("Filter.") and k.endswith(".Name")]
        with self._lock:
            self.calls[action][outcome] += 1
            self.log.append((time.monotonic(), action, outcome, filters, getattr(self.request, "agent", "")))
            self.logged += 1

    def call_log(self, since: int = 0) -> tuple[list[tuple[float, str, str, list[str], str]], int]:
        """The calls logged after the first ``since`` ones (as far as the log still holds them), and
        how many were logged in all: pass that back as ``since`` to read only what is new."""
        with self._lock:
            dropped = self.logged - len(self.log)
            return list(self.log)[max(0, since - dropped):], self.logged

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "seed": self.seed,
                "calls": {action: dict(outcomes) for action, outcomes in self.calls.items()},
                "rules": [asdict(rule) for rule in self.rules],
                "kills": [asdict(kill) for kill in self.kills],
                "rewrites": [asdict(rule) for rule in self.rewrites],
            }

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.log.clear()
            self.logged = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxyServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/__stats__"):
            self._reply(200, json.dumps(self.server.state.snapshot()).encode())
        elif self.path.startswith("/__log__"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            calls, logged = self.server.state.call_log(int((query.get("since") or ["0"])[0]))
            self._reply(200, json.dumps({"calls": calls, "logged": logged}).encode())
        else:
            self._forward(b"")

    def do_PUT(self) -> None:
        if self.path.startswith("/__faults__"):
            payload = json.loads(self._body() or b"{}")
            self.server.state.set_rules([FaultRule(**rule) for rule in payload.get("rules", [])])
            self._reply(200, b"{}")
        elif self.path.startswith("/__rewrites__"):
            payload = json.loads(self._body() or b"{}")
            self.server.state.set_rewrites([RewriteRule(**rule) for rule in payload.get("rules", [])])
            self._reply(200, b"{}")
        elif self.path.startswith("/__kills__"):
            payload = json.loads(self._body() or b"{}")
            self.server.state.set_kills([KillRule(**rule) for rule in payload.get("rules", [])])
            self._reply(200, b"{}")
        elif self.path.startswith("/__timing__"):
            payload = json.loads(self._body() or b"{}")
            self.server.timing.configure(TimingConfig.parse(payload.get("timing", "off")))
            self._reply(200, b"{}")
        elif self.path.startswith("/__iam__"):
            payload = json.loads(self._body() or b"{}")
            self.server.iam.configure(IamConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in payload.items()}))
            self._reply(200, b"{}")
        else:
            self._forward(self._body())

    def do_DELETE(self) -> None:
        if self.path.startswith("/__faults__"):
            self.server.state.set_rules([])
            self.server.state.set_kills([])
            self.server.state.set_rewrites([])
            self._reply(200, b"{}")
        elif self.path.startswith("/__stats__"):
            self.server.state.reset_counts()
            self._reply(200, b"{}")
        elif self.path.startswith("/__tokens__"):
            self.server.tokens.clear()
            self._reply(200, b"{}")
        elif self.path.startswith("/__timing__"):
            self.server.timing.reset()
            self._reply(200, b"{}")
        else:
            self._forward(b"")

    def do_POST(self) -> None:
        body = self._body()
        params = _params(body, self.path)
        action = params.get("Action", "?")
        state = self.server.state
        state.request.agent = self.headers.get("User-Agent", "")
        fault = state.pick_fault(action, params)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.effect == "error":
            state.count(action, f"fault:{fault.code}", params)
            self._error(fault)
            return
        if fault is not None and fault.effect == "empty":
            state.count(action, "fault:empty", params)
            self._reply(200, empty_result_xml(action, str(uuid.uuid4())), "text/xml;charset=UTF-8")
            return
        if fault is not None and fault.effect == "answer":
            state.count(action, "fault:answer", params)
            self._reply(200, fault.body.replace("{request_id}", str(uuid.uuid4())).encode(), "text/xml;charset=UTF-8")
            return
        if self._strict_answer(action, params):
            return
        if action == "DescribeInstances":  # moto lacks the client-token filter: answer it from the tokens
            body = rewrite_client_token_filter(body, self.server.tokens.instance_ids) or body
        token = params.get("ClientToken") if action == "RunInstances" else None
        if not token:
            self._forward(body, action, params, fault)
            return
        with self.server.tokens.lock(token):  # a concurrent repeat waits for the first to finish
            launch = self.server.tokens.get(token)
            if launch is None:
                self._forward(body, action, params, fault, token=token)
            elif launch.fingerprint != fingerprint(params):
                state.count(action, "fault:IdempotentParameterMismatch", params)
                self._reply(400, ec2_error_xml(
                    "IdempotentParameterMismatch",
                    f"The client token {token} was used before with different parameters", str(uuid.uuid4())),
                    "text/xml;charset=UTF-8")
            else:
                self._replay(launch, params)

    def _strict_answer(self, action: str, params: dict[str, str]) -> bool:
        """IAM, then EC2's clock, then the calls moto lacks; True when one of them answered."""
        server, state = self.server, self.server.state
        denial = server.iam.check(self.headers.get("Authorization", ""), params, server.lookups)
        if denial is not None:
            state.count(action, "denied:UnauthorizedOperation", params)
            self._reply(403, ec2_error_xml("UnauthorizedOperation", denial, str(uuid.uuid4())),
                        "text/xml;charset=UTF-8")
            return True
        refusal = server.timing.refuse(action, params, lambda ids: server.moto_states(_region(self.headers), ids))
        if refusal is not None:
            state.count(action, f"model:{refusal.code}", params)
            self._reply(400, ec2_error_xml(refusal.code, refusal.message, str(uuid.uuid4())),
                        "text/xml;charset=UTF-8")
            return True
        if action in ("MonitorInstances", "UnmonitorInstances"):
            state.count(action, "model", params)
            self._reply(200, server.timing.answer_monitoring(action, params, str(uuid.uuid4())),
                        "text/xml;charset=UTF-8")
            return True
        return False

    def _replay(self, launch: _Launch, params: dict[str, str]) -> None:
        """A repeated ClientToken: the original answer, with the state the instance is in now (timing on)."""
        state, timing = self.server.state, self.server.timing
        payload = launch.payload
        if timing.config.on:
            ids = re.findall(r"<instanceId>([^<]+)</instanceId>", payload.decode("utf-8", "replace"))
            payload, gone = timing.replay_state(payload, self.server.moto_states(_region(self.headers), ids))
            if gone:
                state.count("RunInstances", "model:IdempotentInstanceTerminated", params)
                self._reply(400, ec2_error_xml(
                    "IdempotentInstanceTerminated",
                    f"The client token {params.get('ClientToken')} was used before for instance {gone[0]}, "
                    "which has since been terminated", str(uuid.uuid4())), "text/xml;charset=UTF-8")
                return
        state.count("RunInstances", "replayed", params)
        self._send(launch.status, launch.headers, payload)

    def _error(self, fault: FaultRule) -> None:
        status = fault.status or STATUS_BY_CODE.get(fault.code, 400)
        message = fault.message or f"injected {fault.code} by the test fault proxy"
        self._reply(status, ec2_error_xml(fault.code, message, str(uuid.uuid4())), "text/xml;charset=UTF-8")

    def _forward(self, body: bytes, action: str = "", params: dict[str, str] | None = None,
                 fault: FaultRule | None = None, token: str | None = None) -> None:
        upstream = self.server.upstream
        state = self.server.state
        if upstream is None:
            state.count(action or "?", "no-upstream", params)
            self._reply(502, b"no upstream configured", "text/plain")
            return
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            headers["Host"] = f"{upstream.hostname}:{upstream.port}"
            if body:
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                headers["Content-Length"] = str(len(body))  # a rewritten filter changes the body's length
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError as exc:
            state.count(action or "?", "upstream-error", params)
            self._reply(502, str(exc).encode(), "text/plain")
            return
        finally:
            connection.close()
        if response.status < 300 and action:
            payload = state.rewrite(action, self.server.timing.rewrite(action, params or {}, payload))
        kept = [(key, value) for key, value in response.getheaders()
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date")]
        if token and response.status < 300:
            self.server.tokens.remember(token, _Launch(fingerprint(params or {}), response.status, kept, payload))
        if fault is not None:  # moto acted; the caller never hears so
            state.count(action, f"{response.status}+fault:{fault.effect}", params)
            if fault.effect == "forward_then_error":
                self._error(fault)
            else:
                self._drop()
            return
        state.count(action or self.command, str(response.status), params)
        kill = state.pick_kill(action) if action and response.status < 300 else None
        if kill is not None and kill.when == "before_response":
            _kill(kill.pid)
        try:
            self._send(response.status, kept, payload)
        finally:
            if kill is not None and kill.when == "after_response":
                _kill(kill.pid)

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection without a byte of answer (a reply lost on the way back)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _region(headers: Any) -> str:
    return signer(headers.get("Authorization", ""))[1]


def _params(body: bytes, path: str) -> dict[str, str]:
    """The call's query parameters (first value of each), from the form body or the URL."""
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if body else {}
    if "Action" not in fields:
        fields = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


class FaultProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, upstream: str | None = None, seed: int | None = None,
                 timing: TimingConfig | None = None, iam: IamConfig | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = FaultState(seed)
        self.tokens = ClientTokens()
        self.upstream = urllib.parse.urlsplit(upstream) if upstream else None
        self.timing = Ec2Timing(timing or TimingConfig())
        self.iam = IamEnforcer(iam or IamConfig())
        self.moto = MotoQuery(self.upstream)
        self.lookups = Lookups(self.moto.instance_tags, self.moto.image_owner)

    def moto_states(self, region: str, ids: list[str]) -> dict[str, str]:
        return self.moto.states(region, ids)


    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="faultproxy", daemon=True)
        thread.start()
        return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--seed", type=int, help="seed of the random fault choices (default: random, printed)")
    parser.add_argument("--timing", default="off", help="EC2's clock: off, test, dev or pending=S,stopping=S,...")
    parser.add_argument("--iam-key", action="append", default=[], help="evaluate this access key's calls (repeat)")
    parser.add_argument("--iam-policy", action="append", default=[],
                        help="policy file relative to the repository (repeat; default deploy/iam-policy.json)")
    parser.add_argument("--cluster-id", default="", help="replaces CLUSTER_ID in the policies")
    args = parser.parse_args(argv)
    iam = IamConfig(tuple(args.iam_key), tuple(args.iam_policy) or IamConfig().policies, args.cluster_id)
    server = FaultProxyServer(args.port, args.upstream, args.seed, TimingConfig.parse(args.timing), iam)
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))
    print(f"faultproxy listening on {server.url} -> {args.upstream}, seed {server.state.seed}", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
