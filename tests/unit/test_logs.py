"""Log redaction: spec.userData never reaches a log line, however it is spelled."""

from __future__ import annotations

import json
import logging

import pytest

from cml_operator.logs import configure_logging, redact

USER_DATA = "#!/bin/sh\necho 'token=SENTINEL' \"x\"\n"


@pytest.mark.parametrize(
    "text",
    [
        repr({"spec": {"userData": USER_DATA, "region": "us-east-1"}}),
        json.dumps({"spec": {"userData": USER_DATA, "region": "us-east-1"}}),
    ],
    ids=["repr", "json"],
)
def test_user_data_is_masked(text):
    masked = redact(text)
    assert "SENTINEL" not in masked and "<redacted>" in masked and "us-east-1" in masked


def test_kopf_object_dumps_are_cut():
    body = {"metadata": {"annotations": {"last-applied": json.dumps({"spec": {"userData": USER_DATA}})}},
            "spec": {"userData": USER_DATA}}
    masked = redact(f"Creation is in progress: {body!r}")
    assert masked == "Creation is in progress: <object omitted>"


def test_text_without_user_data_is_untouched():
    assert redact("nothing to see") == "nothing to see"


def test_configured_logging_redacts_before_writing(capsys):
    configure_logging("json", "DEBUG")
    logging.getLogger("kopf.objects").debug("Creation is in progress: %r", {"spec": {"userData": USER_DATA}})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "SENTINEL" not in line and record["message"] == "Creation is in progress: <object omitted>"
