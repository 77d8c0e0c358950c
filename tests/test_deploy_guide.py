"""docs/deploy.md, the operator's guide: its settings table is the one generated from the settings, and
it explains every alert and covers what an operator needs."""

import runpy

import yaml

from heta_service.settings import Settings

from .helpers import ROOT, settings_variables


def test_the_settings_table_is_the_one_generated_from_settings():
    tool = runpy.run_path(str(ROOT / "scripts" / "settings-table"))
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert tool["with_table"](guide) == guide, "docs/deploy.md's settings table is stale: run scripts/settings-table"
    table = guide.split(tool["START"])[1].split(tool["END"])[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields) and tool["render"]() in table
    for name in settings_variables():
        assert f"`{name}`" in tool["render"](), name
    readme = (ROOT / "README.md").read_text()
    assert not [line for line in readme.splitlines() if line.startswith("| `HETA_")], (
        "a second settings table in README"
    )
    assert "(docs/deploy.md" in readme


def test_the_guide_explains_every_alert_and_covers_what_an_operator_needs():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    headings = {line.removeprefix("### ").strip() for line in guide.splitlines() if line.startswith("### ")}
    for rule in rules:
        assert rule["alert"] in headings and rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
    sections = {line.removeprefix("## ").strip() for line in guide.splitlines() if line.startswith("## ")}
    for needed in (
        "Images",
        "Models: download and revision pinning",
        "Run with Docker Compose",
        "Several machines against one Redis",
        "On GPUs",
        "Kubernetes",
        "API keys and their rotation",
        "Sizing",
        "Alerts",
        "Upgrading without losing queued jobs",
        "Every setting",
    ):
        assert needed in sections, needed
    for command in (
        "heta download",
        "kubectl -n heta apply -k deploy/k8s/overlays/gpu",
        "docker compose --profile cpu up",
        "--scale worker=2",
        "HETA_DEVICE",
        "minReplicaCount: 0",
    ):
        assert command in guide, command
