"""The TypeScript client (clients/typescript, npm package heta-client) run by the machine's Node against
a live `heta serve` (heta-demo, API keys), through the fault-injecting proxy of test_client.py where a
retry is the point; and the contract: types regenerated from the live server's /openapi.json equal the
committed src/schema.d.ts, and the `npm pack` output installs into an empty folder where its example runs."""

import json
import shutil
import subprocess
import time

import pytest

from heta_service.connections import connect

from ..helpers import ROOT, job_count
from .conftest import serve
from .test_client import KEY, LONG, PROMPT, FaultProxy, _embedded_url

PACKAGE = ROOT / "clients" / "typescript"
NODE = shutil.which("node")


def node(script: str, *, timeout: float = 180, **env: str) -> dict:
    """Runs ``script`` (an ES module; ``HetaClient`` and the error classes imported from the built
    dist/, ``print(value)`` writes the answer) and returns what it printed, parsed."""
    prelude = (
        'import { HetaClient, HttpError, JobFailedError, NetworkError, ProblemError } from "./dist/index.js";\n'
        "const print = (value) => console.log(JSON.stringify(value));\n"
        "const env = process.env;\n"
    )
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", prelude + script],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    assert (PACKAGE / "dist" / "index.js").exists(), "scripts/setup builds clients/typescript (npm ci, npm run build)"
    folder = tmp_path_factory.mktemp("tsclient")
    with serve(None, folder, API_KEYS=f"{KEY},k2") as server:
        server.redis = connect(_embedded_url(folder / "redis"))
        yield server


@pytest.fixture
def proxy(live):
    running = FaultProxy(live.url)
    yield running
    running.close()


def test_attribute_returns_the_servers_document(live):
    answer = node(
        """const heta = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY });
        const result = await heta.attribute({ text: env.PROMPT, target_text: " 3", config: { samples: 3, seed: 5 } });
        print(result);""",
        URL=live.url,
        KEY=KEY,
        PROMPT=PROMPT,
    )
    stored = live.http.get(f"/jobs/{answer['job_id']}", headers={"Authorization": f"Bearer {KEY}"}).json()["result"]
    assert answer == stored  # every number as the server stored it
    top = max(answer["tokens"], key=lambda t: t["score"])
    assert top["text"] == "h=3" and answer["targets"][0]["text"] == "3"


def test_a_submit_whose_answer_is_lost_is_retried_into_the_same_job(live, proxy):
    before = job_count(live.redis)
    proxy.faults = [("POST", "/jobs", "drop")]
    answer = node(
        """const heta = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY, backoffMs: 50 });
        const accepted = await heta.submit({ text: env.PROMPT, target_text: " 3", config: { samples: 3, seed: 31 } });
        const result = await heta.wait(accepted.job_id);
        print({ accepted, result });""",
        URL=proxy.url,
        KEY=KEY,
        PROMPT=PROMPT,
    )
    job_id = answer["accepted"]["job_id"]
    assert proxy.answers and proxy.answers[0]["job_id"] == job_id  # the lost answer named this very job
    assert [s for s in proxy.seen if s[0] == "POST"] == [("POST", "/jobs", None), ("POST", "/jobs", 202)]
    assert job_count(live.redis) == before + 1  # one job, not two: the retry carried the same Idempotency-Key
    assert answer["result"]["job_id"] == job_id


def test_attribute_honours_retry_after_and_keeps_its_idempotency_key(live, proxy):
    before = job_count(live.redis)
    proxy.faults = [("POST", "/attribute", 503), ("POST", "/attribute", "drop")]
    answer = node(
        """const heta = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY, backoffMs: 50 });
        const started = performance.now();
        const result = await heta.attribute({ text: env.PROMPT, target_text: " 3", config: { samples: 4, seed: 32 } });
        const same = await heta.submit({ text: env.PROMPT, target_text: " 3" }, { idempotencyKey: "ts-key-1" });
        const again = await heta.submit({ text: env.PROMPT, target_text: " 3" }, { idempotencyKey: "ts-key-1" });
        print({ waited: (performance.now() - started) / 1000, jobId: result.job_id, same: same.job_id, again: again.job_id });""",  # noqa: E501 - JavaScript, kept as it is written
        URL=proxy.url,
        KEY=KEY,
        PROMPT=PROMPT,
    )
    posts = [s for s in proxy.seen if s[:2] == ("POST", "/attribute")]
    assert posts[0][2] == 503 and posts[1][2] is None and posts[2][2] == 200
    assert answer["waited"] >= 1.0  # the injected Retry-After: 1 (the back-off alone is 0.05 s)
    assert answer["jobId"] == proxy.answers[0]["job_id"]  # the retry found the job of the lost answer
    assert answer["same"] == answer["again"]  # an explicit key: the second submit is the first job
    assert job_count(live.redis) == before + 2
    print(f"retry after 503 + Retry-After 1: {answer['waited']:.2f} s")


def test_events_stream_partials_then_the_result(live):
    answer = node(
        """const heta = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY });
        const { job_id } = await heta.submit({ text: env.PROMPT, target_text: " 3", config: { samples: 3, seed: 33, diagnostics: true } });
        const events = [];
        for await (const item of heta.events(job_id)) events.push({ event: item.event, data: item.data });
        const partials = [];
        const waited = await heta.wait(job_id, { onPartial: (p) => partials.push(p.stages_done) });
        print({ job_id, events, waited, view: await heta.job(job_id) });""",  # noqa: E501 - JavaScript, kept as it is written
        URL=live.url,
        KEY=KEY,
        PROMPT=PROMPT,
    )
    names = [e["event"] for e in answer["events"]]
    assert names[0] == "status" and names[-1] == "result" and "problem" not in names
    partial_stages = [e["data"]["stages_done"] for e in answer["events"] if e["event"] == "partial"]
    # a worker publishes the flow, then flow + KL, and with diagnostics the three terms before the
    # diagnostics run; a fast job may be done before a reader sees some of them, never out of order
    published = (["flow"], ["flow", "kl"], ["flow", "kl", "hessian"])
    assert all(stages in published for stages in partial_stages)
    assert partial_stages == sorted(partial_stages, key=published.index)
    final = answer["events"][-1]["data"]
    assert final == answer["view"]["result"] == answer["waited"] and final["partial"] is False
    assert answer["view"]["status"] == "done" and final["diagnostics"]["rows"]


def test_cancel_rejects_the_wait_with_the_jobs_code(live):
    answer = node(
        """const heta = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY });
        const { job_id } = await heta.submit(JSON.parse(env.LONG));
        const view = await heta.cancel(job_id);
        try {
          await heta.wait(job_id);
          print({ error: null });
        } catch (error) {
          print({ view, error: { name: error.name, code: error.code, status: error.status, typed: error instanceof JobFailedError && error instanceof ProblemError } });
        }""",  # noqa: E501 - JavaScript, kept as it is written
        URL=live.url,
        KEY=KEY,
        LONG=json.dumps(LONG),
    )
    assert answer["view"]["status"] in ("cancelling", "cancelled")
    assert answer["error"] == {"name": "JobFailedError", "code": "cancelled", "status": 409, "typed": True}


def test_models_and_batch(live):
    answer = node(
        """const heta = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY });
        const models = await heta.models();
        const batch = await heta.batch({ items: [{ text: env.PROMPT, target_text: " 3" }, { text: "f=3 b=7 k=3 a=1 ? b", target_text: " 7" }],
                                         config: { method: "gradient" } });
        print({ models, batch });""",  # noqa: E501 - JavaScript, kept as it is written
        URL=live.url,
        KEY=KEY,
        PROMPT=PROMPT,
    )
    models = answer["models"]
    assert models["default"] == "heta-demo" and [m["name"] for m in models["models"]] == ["heta-demo"]
    assert (
        models["method_details"]["integrated_gradients"]["signed"] is True
        and models["method_details"]["heta"]["signed"] is False
    )
    items = answer["batch"]["items"]
    assert [item["result"]["targets"][0]["text"] for item in items] == ["3", "7"]
    assert all(item["result"]["method"] == "gradient" for item in items)


def test_problems_and_non_problem_bodies_are_typed_errors(live, proxy):
    page = b"<html><body>502 Bad Gateway (nginx)</body></html>"
    proxy.faults = [("GET", "/models", (502, "text/html", page))]
    answer = node(
        """const describe = async (call) => {
          try {
            await call();
            return null;
          } catch (error) {
            return { name: error.name, status: error.status, code: error.code ?? null, body: error.body ?? null,
                     field: error.problem?.errors?.[0]?.loc ?? null, problem: error instanceof ProblemError, http: error instanceof HttpError };
          }
        };
        const mine = new HetaClient({ baseUrl: env.URL, apiKey: env.KEY, retries: 0 });
        const wrong = new HetaClient({ baseUrl: env.URL, apiKey: "wrong" });
        const proxied = new HetaClient({ baseUrl: env.PROXY, apiKey: env.KEY });
        const nowhere = new HetaClient({ baseUrl: "http://127.0.0.1:9", retries: 1, backoffMs: 10 });
        print({
          range: await describe(() => mine.attribute({ text: env.PROMPT, target_position: 99 })),
          missing: await describe(() => mine.job("no-such-job")),
          key: await describe(() => wrong.models()),
          invalid: await describe(() => mine.submit({ text: env.PROMPT, config: { samples: -1 } })),
          page: await describe(() => proxied.models()),
          unreachable: await describe(() => nowhere.models()),
        });""",  # noqa: E501 - JavaScript, kept as it is written
        URL=live.url,
        KEY=KEY,
        PROMPT=PROMPT,
        PROXY=proxy.url,
    )
    assert (
        answer["range"]["status"] == 422
        and answer["range"]["code"] == "target_out_of_range"
        and answer["range"]["problem"]
    )
    assert (answer["missing"]["status"], answer["missing"]["code"]) == (404, "job_not_found")
    assert (answer["key"]["status"], answer["key"]["code"]) == (403, "invalid_api_key")
    assert (
        answer["invalid"]["status"] == 422
        and answer["invalid"]["name"] == "ProblemError"
        and answer["invalid"]["field"]
    )
    # not a problem document: an HttpError keeping the status and the body as sent
    assert answer["page"] == {
        "name": "HttpError",
        "status": 502,
        "code": None,
        "body": page.decode(),
        "field": None,
        "problem": False,
        "http": True,
    }
    assert answer["unreachable"]["name"] == "NetworkError"


def test_the_committed_types_are_the_live_servers_contract(live, tmp_path):
    """`npm run gen` against the live server's /openapi.json: a schema change the committed
    src/schema.d.ts does not have fails here (regenerate with `npm run gen -- <server url>`)."""
    fresh = tmp_path / "schema.d.ts"
    done = subprocess.run(
        [NODE, "scripts/gen.mjs", live.url, "--out", str(fresh)],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    committed = (PACKAGE / "src" / "schema.d.ts").read_text()
    assert fresh.read_text() == committed, (
        "the API changed: run `npm run gen -- <server url>` in clients/typescript and commit src/schema.d.ts"
    )
    assert "method_details" in committed and '"idempotency-key"?: string | null' in committed
    check = subprocess.run(
        ["npx", "--no-install", "tsc", "-p", "tsconfig.json", "--noEmit"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr  # the client still compiles against it


def test_npm_pack_installs_into_an_empty_folder_and_its_example_runs(live, tmp_path):
    packed = subprocess.run(
        ["npm", "pack", "--json", "--ignore-scripts", "--pack-destination", str(tmp_path)],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert packed.returncode == 0, packed.stderr
    tarball = tmp_path / json.loads(packed.stdout)[0]["filename"]
    files = {f["path"] for f in json.loads(packed.stdout)[0]["files"]}
    assert {
        "dist/index.js",
        "dist/index.d.ts",
        "dist/schema.d.ts",
        "dist/component.js",
        "dist/heta-attribution.js",
        "example/show.mjs",
    } <= files
    assert not any(f.startswith(("src/", "node_modules/", "scripts/")) for f in files)
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "dashboard", "private": true, "type": "module"}')
    # offline: the tarball has no runtime dependencies, so nothing is fetched
    installed = subprocess.run(
        ["npm", "install", "--offline", "--no-audit", "--no-fund", str(tarball)],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    started = time.monotonic()
    run = subprocess.run(
        [NODE, "node_modules/heta-client/example/show.mjs", live.url],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "HETA_API_KEY": KEY},
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith('heta explains "3" (job ') and lines[1].startswith('"h=3"\t')
    job_id = lines[0].rsplit("job ", 1)[1].rstrip(")")
    stored = live.http.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}).json()["result"]
    assert float(lines[1].split("\t")[1]) == max(t["score"] for t in stored["tokens"])
    print(
        f"npm pack: {tarball.stat().st_size} bytes, {len(files)} files; example ran in "
        f"{time.monotonic() - started:.1f} s"
    )
