"""The job store is the one home of the job statuses and the Redis keys: the Lua transitions, the
HTTP schema and the Python client take the statuses from it, and no other module spells a key."""

from __future__ import annotations

import re

from heta_service import client, schemas, store

from .helpers import ROOT

SCRIPTS = {name: getattr(store, name) for name in ("ENQUEUE", "FINALIZE", "START", "TAKE", "IF_MINE", "RENEW")}


def test_the_scripts_statuses_are_the_enums():
    for name, script in SCRIPTS.items():
        assert "$" not in script, name  # every placeholder substituted
        quoted = set(re.findall(r"'([a-z_]+)'", script))
        statuses = quoted & {"queued", "running", "cancelling", "done", "failed", "cancelled", "dead_lettered"}
        assert statuses <= set(store.STATUSES), (name, statuses)
    # FINALIZE and START refuse exactly the final statuses
    for name in ("FINALIZE", "START"):
        assert set(re.findall(r"status == '([a-z_]+)'", SCRIPTS[name])) == set(store.FINAL), name
    assert set(store.FINAL) < set(store.STATUSES) and store.JobStatus.DONE == "done"


def test_the_schema_and_the_client_take_the_statuses_from_the_store():
    assert client.FINAL is store.FINAL
    status = schemas.JobView.model_json_schema()["properties"]["status"]
    assert tuple(status["enum"]) == store.STATUSES


def test_no_module_but_the_store_spells_a_redis_key():
    spelled = []
    for path in (ROOT / "service").rglob("*.py"):
        if path.parent.name == "store":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["']heta:[a-z]""", line) and not line.lstrip().startswith("#"):
                spelled.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not spelled, spelled
