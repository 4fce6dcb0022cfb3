"""The one record codec (simulator.records): what edgesim writes as JSON reads back equal, and a
malformed file or lab output is one line naming the record and the field, never a traceback."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from simulator.errors import EdgesimError
from simulator.firewall.rules import RuleRef
from simulator.firewall.trace import Decision
from simulator.lab.runners.base import LabConfig, ListenerCheck, ListenerInfo, ServiceState
from simulator.lab.runners.local import RunningLab, find_running_lab, running_lab_file
from simulator.lab.topology import Topology
from simulator.load.drive import DriveResult
from simulator.records import RecordError

LISTENER = ListenerInfo(
    "198.51.100.10:5061/tcp", "access", "sip", 5061, "tcp", "198.51.100.10", 5061
)


def test_records_read_back_equal() -> None:
    rule = RuleRef("fw", "inet", "edgesim", "forward", 12, "tcp dport 5061 accept", "e.nft", 3)
    decision = Decision(
        "fw", "reply", "dropped", "inet edgesim forward", None, None, True, policy_at=rule
    )
    assert Decision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision
    check = ListenerCheck("edge", "access-edge", LISTENER, True, "answers")
    assert ListenerCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check
    drive = DriveResult("relay", "a", "b:3478", 2, 1, Counter({"refused 486": 1}), [0.5], hold=5.0)
    again = DriveResult.from_dict(json.loads(json.dumps(drive.to_dict())))
    assert again == drive and isinstance(again.failures, Counter)


def test_a_field_the_json_omits_is_given_by_the_caller() -> None:
    state = ServiceState("edge", "access-edge", "running", "", [LISTENER])
    data = state.to_dict()
    assert "host" not in data  # a ready file names its host once
    assert ServiceState.from_dict(data, host="edge") == state


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a listener check: must be a table, not a list"),
        ({"host": "edge", "service": "s", "ok": True, "detail": ""}, "listener: missing"),
        (
            {"host": "edge", "service": "s", "ok": "yes", "detail": "", "listener": {}},
            "not a listener check: listener.label: missing",
        ),
        (
            {
                "host": "e",
                "service": "s",
                "ok": True,
                "detail": "",
                "listener": {**LISTENER.to_dict(), "port": "5061"},
            },
            "not a listener check: listener.port: must be an integer, not a string",
        ),
    ],
)
def test_bad_json_names_the_record_and_the_field(data: object, message: str) -> None:
    with pytest.raises(RecordError, match=message) as raised:
        ListenerCheck.from_dict(data)
    assert isinstance(raised.value, EdgesimError) and "\n" not in str(raised.value)


def test_counts_and_lists_are_checked_by_element() -> None:
    data = DriveResult("relay", "a", "b", 1).to_dict()
    with pytest.raises(RecordError, match="failures: must be a table of integers, not a table"):
        DriveResult.from_dict({**data, "failures": {"x": "1"}})
    with pytest.raises(RecordError, match="setup: must be a list of numbers, not a list"):
        DriveResult.from_dict({**data, "setup": [0.1, None]})


def test_the_embedded_labs_state_file_reads_back(tmp_path: Path, topology: Topology) -> None:
    config = LabConfig(topology, certs_dir=tmp_path, state_dir=tmp_path)
    state = ServiceState("edge", "access-edge", "running", "", [LISTENER])
    lab = RunningLab(1, str(topology.path), tmp_path, 0, 1.5, (state,), "")
    data = lab.to_dict()
    assert data["services"][0]["host"] == "edge"
    assert RunningLab.from_dict(data) == lab
    path = running_lab_file(config)
    path.write_text(json.dumps({**data, "started": "soon"}))
    assert find_running_lab(config) is None  # a malformed file is no lab, not a traceback
