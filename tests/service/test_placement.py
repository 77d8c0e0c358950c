"""How the service places a model: HETA_DEVICE_MAP / HETA_OFFLOAD_FOLDER / HETA_QUANTIZE through a
live `heta serve` (/models says how each model is placed), HETA_GPUS_PER_WORKER's grouping of the
visible GPUs (a faked device count), and bad settings refused at start in one line."""

import json
import subprocess
import time

import pytest

from heta_core import Attributor, HetaConfig
from heta_service.settings import Settings
from heta_service.supervisor import PlacementError, device_env

from .conftest import base_env, heta_command, serve

TEXT = "the cat sat on the mat"
SPLIT = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.drop": "cpu",
    "transformer.h.0": "cpu",
    "transformer.h.1": "disk",
    "transformer.ln_f": "disk",
    "lm_head": "disk",
}


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def _placement(server) -> dict:
    (model,) = server.http.get("/models").json()["models"]
    return model["placement"]


def test_models_shows_a_split_model_and_it_attributes(model_dir, tmp_path):
    mapping = json.dumps(SPLIT)
    with serve(model_dir, tmp_path, WORKERS=1, DEVICE_MAP=mapping, OFFLOAD_FOLDER=tmp_path / "offload") as server:
        placement = _placement(server)
        assert placement == {
            "dtype": "float64",
            "quantization": None,
            "device_map": {"cpu": 4, "disk": 3},
            "requested_device_map": mapping,
            "gpus_per_worker": 1,
            "loaded": True,
        }
        done = server.http.post("/attribute", json={"text": TEXT, "config": {"samples": 2}, "wait": 60})
        assert done.status_code == 200, done.text
        assert len(done.json()["tokens"]) == len(TEXT.split()) - 1 and all(
            t["score"] > 0 for t in done.json()["tokens"]
        )


def test_models_shows_a_quantized_model(model_dir, tmp_path):
    with serve(model_dir, tmp_path, WORKERS=1, QUANTIZE="int8", DTYPE="float32") as server:
        placement = _placement(server)
        assert placement == {
            "dtype": "float32",
            "quantization": "int8",
            "device_map": {},
            "requested_device_map": None,
            "gpus_per_worker": 1,
            "loaded": True,
        }
        done = server.http.post("/attribute", json={"text": TEXT, "config": {"method": "occlusion"}, "wait": 60})
        assert done.status_code == 200, done.text


def test_each_worker_holds_a_group_of_gpus_for_a_split_model():
    grouped = device_env(settings(device_map="auto", gpus_per_worker=2), 4, None)
    assert grouped == [
        {"CUDA_VISIBLE_DEVICES": "0,1"},
        {"CUDA_VISIBLE_DEVICES": "2,3"},
    ]  # no HETA_DEVICE: the map places
    assert device_env(settings(device_map="auto", gpus_per_worker=4), 8, "1,3,5,7,9,11,13,15") == [
        {"CUDA_VISIBLE_DEVICES": "1,3,5,7"},
        {"CUDA_VISIBLE_DEVICES": "9,11,13,15"},
    ]
    three = device_env(settings(device_map="auto", gpus_per_worker=2, workers=3), 4, None)
    assert [w["CUDA_VISIBLE_DEVICES"] for w in three] == ["0,1", "2,3", "0,1"]
    # a device map with one GPU per worker (GPU + CPU offload): each worker its own card, still no HETA_DEVICE
    assert device_env(settings(device_map="auto"), 2, None) == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
    ]


def test_groups_that_do_not_divide_the_gpus_are_refused():
    with pytest.raises(PlacementError, match="HETA_GPUS_PER_WORKER=3 does not divide the 4 visible GPUs"):
        device_env(settings(device_map="auto", gpus_per_worker=3), 4, None)


@pytest.mark.parametrize(
    "env, words",
    [
        ({"DEVICE_MAP": "everywhere"}, "HETA_DEVICE_MAP: device map must be one of auto"),
        (
            {"DEVICE_MAP": '{"transformer.h.1": "disk"}'},
            'HETA_DEVICE_MAP: a device map with "disk" entries needs an offload folder',
        ),
        ({"DEVICE_MAP": "auto", "DEVICE": "cpu"}, "HETA_DEVICE_MAP: give a device or a device map, not both"),
        ({"OFFLOAD_FOLDER": "/tmp/x"}, "HETA_DEVICE_MAP: an offload folder is only used with a device map"),
        ({"GPUS_PER_WORKER": "2"}, "HETA_GPUS_PER_WORKER > 1 needs HETA_DEVICE_MAP"),
        ({"GPUS_PER_WORKER": "0"}, "HETA_GPUS_PER_WORKER"),
        ({"DEVICE_MAP": "auto", "GPUS_PER_WORKER": "2", "WORKERS_PER_GPU": "2"}, "cannot both exceed 1"),
        ({"QUANTIZE": "int4"}, "HETA_QUANTIZE"),
        ({"QUANTIZE": "int8", "DTYPE": "float64"}, "HETA_QUANTIZE=int8 needs HETA_DTYPE float32"),
    ],
)
def test_bad_placement_settings_fail_at_start_in_one_line(model_dir, tmp_path, env, words, monkeypatch):
    """Through `heta serve`'s own entry point in this process (a process start costs seconds each; the
    test below shows once that a real process prints that one line and nothing else)."""
    from heta_core.cli import main

    for name, value in base_env(model_dir, tmp_path, **env).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        main(["serve"])
    message = str(stopped.value.code)
    assert len(message.splitlines()) == 1 and message.startswith("heta serve: error:") and words in message, message


def test_a_bad_setting_in_a_real_process_is_one_line(model_dir, tmp_path):
    env = base_env(model_dir, tmp_path, DEVICE_MAP="everywhere")
    done = subprocess.run(heta_command("serve"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr.startswith("heta serve: error: HETA_DEVICE_MAP: device map must be one of")
        and done.stderr.count("\n") == 1
    )


def test_cuda_graphs_runs_the_bucketed_chunks_and_models_counts_them(model_dir, tmp_path):
    """HETA_CUDA_GRAPHS: the worker runs the Hessian stage's padded chunks (on a CPU eagerly: nothing to
    capture) with the numbers of a worker without it, and /models sums its counts."""
    body = {"text": TEXT, "config": {"samples": 2, "seed": 4}, "wait": 60}
    with serve(model_dir, tmp_path, WORKERS=1, CUDA_GRAPHS="true", BATCH_JOBS=1) as server:
        (before,) = server.http.get("/models").json()["models"]
        assert before["cuda_graphs"] == {"captured": 0, "replayed": 0, "eager": 0, "failed": 0}
        done = server.http.post("/attribute", json=body)
        assert done.status_code == 200, done.text
        deadline = time.monotonic() + 30  # the worker reports at its next heartbeat (HETA_HEARTBEAT_S)
        while (counts := server.http.get("/models").json()["models"][0]["cuda_graphs"])["eager"] == 0:
            assert time.monotonic() < deadline, counts
            time.sleep(0.5)
        assert counts["eager"] >= 1 and counts["captured"] == counts["replayed"] == counts["failed"] == 0
    alone = Attributor.from_pretrained(model_dir, config=HetaConfig(num_hvp_samples=2, seed=4)).attribute(TEXT)
    scores = [t["hessian"] for t in done.json()["tokens"]]
    assert scores == pytest.approx(alone.hessian.tolist(), rel=1e-6)  # float64 to 1e-10, then float32
