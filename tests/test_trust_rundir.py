"""Issue 40, items 4, 6 and 7 (01 and 05's part): a run directory is a boundary (no read or write through a
symlink or outside it, one `make run` at a time, a validated `pipeline.json`, recorded hashes checked on
resume), resume compares every setting that shapes the result and a used directory is never silently
overwritten, and the commands of 01 refuse bad input before they work."""

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import symbolic_l2o.meta_train  # noqa: F401  (the package re-exports a function of this name)
from symbolic_l2o.cli import evaluate_cli, meta_train_cli
from symbolic_l2o.learned_rules import make_rule
from symbolic_l2o.optimizers import AdamRule
from symbolic_l2o.report import build_report, load_summaries, report_markdown
from symbolic_l2o.pipeline import run_pipeline
from symbolic_l2o.runs import run_lock, write_summary
from symbolic_l2o.library import load_pretrained
from symbolic_l2o.tasks import QuadraticTask, make_task

mt = sys.modules["symbolic_l2o.meta_train"]
ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"secret-bytes" * 4


# 4. A run directory is a boundary ---------------------------------------------------------------------------


def summarise(run_dir: Path, **fields) -> Path:
    path = run_dir / "summary" / "01_toy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": "01_toy", **fields}))
    return path


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_the_report_refuses_a_figure_outside_the_run_directory(tmp_path, where):
    run_dir, secret = tmp_path / "run", tmp_path / "secret.png"
    secret.write_bytes(PNG)
    (run_dir / "figures").mkdir(parents=True)
    (run_dir / "figures" / "link.png").symlink_to(secret)
    figure = {"absolute": str(secret), "parent": "../secret.png", "symlink": "figures/link.png"}[where]
    summarise(run_dir, figures={"curves": figure})
    with pytest.raises(ValueError, match="outside the run directory|symbolic link"):
        build_report(run_dir, bench=None)
    page = run_dir / "report.html"
    assert not page.exists() or base64_of(PNG) not in page.read_text()


def base64_of(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_a_note_cannot_smuggle_an_image_from_outside_into_the_page(tmp_path):
    run_dir, secret = tmp_path / "run", tmp_path / "secret.png"
    secret.write_bytes(PNG)
    summarise(run_dir, notes=[f"look ![x]({secret})"])
    with pytest.raises(ValueError, match="outside the run directory"):
        build_report(run_dir, bench=None)
    assert not (run_dir / "report.html").exists()


def test_a_summary_directory_that_is_a_symlink_gets_no_write(tmp_path):
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir(), elsewhere.mkdir()
    (run_dir / "summary").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symbolic link"):
        write_summary(run_dir, "01_toy", notes=["a note"])
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ValueError, match="symbolic link"):
        load_summaries(run_dir)


def test_a_lock_file_that_is_a_symlink_gets_no_write(tmp_path):
    run_dir, target = tmp_path / "run", tmp_path / "elsewhere.txt"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"), run_lock(run_dir):
        pass
    with pytest.raises(ValueError, match="symbolic link"):
        quadratic_run(run_dir)
    assert not target.exists()


def toy_stage(nbs: Path) -> Path:
    "One stage notebook, `01_toy`: writes `out.txt` and its summary (with the file as an output)."
    nbs.mkdir(parents=True, exist_ok=True)
    nc = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(
        cells=[
            nc('#| tags: [parameters]\nscale = "cpu"\nout_dir = None'),
            nc(
                "from pathlib import Path\nfrom symbolic_l2o.runs import write_summary\n"
                "if out_dir is not None:\n"
                "    (Path(out_dir) / 'out.txt').write_text('result')\n"
                "    write_summary(out_dir, '01_toy', notes=['done'], outputs=[Path(out_dir) / 'out.txt'])"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, str(nbs / "01_toy.ipynb"))
    return nbs


def test_run_pipeline_takes_the_lock_and_a_second_run_fails_at_once_naming_it(tmp_path):
    nbs, run_dir = toy_stage(tmp_path / "nbs"), tmp_path / "run"
    with run_lock(run_dir):  # another `report run` holds the directory
        with pytest.raises(RuntimeError, match=r"being written by another process.*\.lock"):
            run_pipeline(run_dir, "test", nbs_path=nbs, progress=False)
        r = subprocess.run(
            [sys.executable, "-m", "symbolic_l2o.report", "run", str(run_dir), "--nbs", str(nbs)],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode == 1 and ".lock" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (run_dir / "01_toy.ipynb").exists() and not (run_dir / "pipeline.json").exists()


GOOD = {
    "scale": "test",
    "device": "auto",
    "cpus": 2,
    "stages": {
        "01_toy": {
            "status": "done",
            "parameters": {"scale": "test"},
            "notebook": "01_toy.ipynb",
            "seconds": 1.5,
            "inputs": [],
            "outputs": [{"path": "out.txt", "sha256": hashlib.sha256(b"result").hexdigest()}],
        }
    },
}


def tampered(change):
    record = json.loads(json.dumps(GOOD))
    change(record)
    return record


def set_in(path, value):
    def change(record):
        d = record
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return change


TAMPERED = {
    "not JSON": ("{not json", "not JSON"),
    "a list": ([], "a JSON object"),
    "scale": (tampered(set_in(["scale"], 3)), "scale"),
    "stages": (tampered(set_in(["stages"], [])), "stages"),
    "status": (tampered(set_in(["stages", "01_toy", "status"], "bogus")), "stages.01_toy.status"),
    "seconds": (tampered(set_in(["stages", "01_toy", "seconds"], "fast")), "stages.01_toy.seconds"),
    "outputs": (tampered(set_in(["stages", "01_toy", "outputs"], "out.txt")), "stages.01_toy.outputs"),
    "sha256": (
        tampered(set_in(["stages", "01_toy", "outputs"], [{"path": "out.txt", "sha256": "xyz"}])),
        r"stages.01_toy.outputs\[0\].sha256",
    ),
    "path": (
        tampered(set_in(["stages", "01_toy", "outputs"], [{"path": 7, "sha256": "0" * 64}])),
        r"stages.01_toy.outputs\[0\].path",
    ),
}


def tampered_run(tmp_path, content) -> tuple[Path, Path]:
    nbs, run_dir = toy_stage(tmp_path / "nbs"), tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "out.txt").write_text("result")
    (run_dir / "01_toy.done").write_text("{}")  # complete: no kernel is started
    (run_dir / "pipeline.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return nbs, run_dir


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_pipeline_json_is_a_one_line_error_naming_the_file_and_field(tmp_path, case):
    content, field = TAMPERED[case]
    nbs, run_dir = tampered_run(tmp_path, content)
    for call in (
        lambda: run_pipeline(run_dir, "test", nbs_path=nbs, progress=False, log=lambda _: None),
        lambda: report_markdown(run_dir, bench=None),
    ):
        with pytest.raises(ValueError, match=field) as e:
            call()
        assert "pipeline.json" in str(e.value) and "\n" not in str(e.value)


def test_a_recorded_path_outside_the_run_directory_is_refused_on_resume(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("result")
    record = tampered(
        set_in(
            ["stages", "01_toy", "outputs"],
            [{"path": "../outside.txt", "sha256": hashlib.sha256(b"result").hexdigest()}],
        )
    )
    nbs, run_dir = tampered_run(tmp_path, record)
    with pytest.raises(ValueError, match="outside the run directory"):
        run_pipeline(run_dir, "test", nbs_path=nbs, progress=False, log=lambda _: None)


def test_a_tampered_summary_is_a_one_line_error_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    summarise(run_dir, tables={"t": {"columns": 3, "rows": [[1]]}})
    with pytest.raises(ValueError, match=r"01_toy.json.*tables") as e:
        build_report(run_dir, bench=None)
    assert "\n" not in str(e.value)


def test_resume_rehashes_completed_stages(tmp_path):
    nbs, run_dir = toy_stage(tmp_path / "nbs"), tmp_path / "run"
    record = run_pipeline(run_dir, "test", nbs_path=nbs, progress=False, log=lambda _: None)
    assert record["stages"]["01_toy"]["outputs"][0]["sha256"] == hashlib.sha256(b"result").hexdigest()
    (run_dir / "out.txt").write_text("edited after the stage ran")
    with pytest.raises(ValueError, match="out.txt") as e:
        run_pipeline(run_dir, "test", nbs_path=nbs, progress=False, log=lambda _: None)
    assert "start a new run" in str(e.value) and "delete" in str(e.value)
    (run_dir / "out.txt").unlink()  # deleting the stage's outputs computes them again
    lines = []
    run_pipeline(run_dir, "test", nbs_path=nbs, progress=False, log=lines.append)
    assert any("01_toy: running" in line for line in lines), lines
    assert (run_dir / "out.txt").read_text() == "result"


# 6. Resume compares everything that shapes the result -------------------------------------------------------


def quadratic_run(out_dir, resume=False, task=None, rule=None, **kw):
    torch.manual_seed(0)
    settings = mt.MetaTrainSettings(**{"epochs": 2, "epoch_len": 4, "unroll": 2, "checkpoint_every": 1, **kw})
    rule = rule or make_rule("rp_s")
    mt.meta_train(rule, task or QuadraticTask(), settings, out_dir=out_dir, resume=resume, progress=False)
    return rule


@pytest.mark.parametrize(
    "changed, says",
    [
        ({"task": QuadraticTask(dim=50)}, "dim=10 there, 50 here"),
        ({"task": QuadraticTask(noise=0.1)}, "noise=0.0 there, 0.1 here"),
        ({"clip": 0.5}, "clip=1.0 there, 0.5 here"),
        ({"imitation_ratio": 0.5}, "imitation_ratio=0.0 there, 0.5 here"),
        ({"second_order": True}, "second_order=False there, True here"),
        ({"curriculum": mt.Curriculum(horizons=(4,), eval_every=1, eval_seeds=1)}, "curriculum="),
        ({"teacher": AdamRule(lr=0.1)}, "teacher="),
    ],
)
def test_resume_refuses_any_setting_that_shapes_the_result_naming_it(tmp_path, changed, says):
    quadratic_run(tmp_path)
    with pytest.raises(ValueError, match=says):
        quadratic_run(tmp_path, resume=True, epochs=3, **changed)


def test_resume_compares_a_tasks_full_configuration(tmp_path):
    quadratic_run(tmp_path, task=make_task("digits_mlp"))
    with pytest.raises(ValueError, match="batch_size=128 there, 64 here"):
        quadratic_run(tmp_path, resume=True, epochs=3, task=make_task("digits_mlp", batch_size=64))


def test_a_checkpoint_predating_the_check_resumes_with_a_warning_only_when_its_own_fields_match(tmp_path):
    quadratic_run(tmp_path)
    path = tmp_path / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    ck.pop("settings")  # as the meta_train before issue 40 wrote it
    torch.save(ck, path)
    with pytest.raises(ValueError, match="seed=0 there, 1 here"):
        quadratic_run(tmp_path, resume=True, epochs=3, seed=1)
    with pytest.warns(UserWarning, match="predates"):
        quadratic_run(tmp_path, resume=True, epochs=3)
    ck = torch.load(path, weights_only=True)  # written again, with every setting
    assert set(ck["settings"]) == set(mt._RESUME_COMPARES)
    ck["settings"].pop("clip")  # some of the settings but not all: damaged, refused
    torch.save(ck, path)
    with pytest.raises(ValueError, match="clip"):
        quadratic_run(tmp_path, resume=True, epochs=4)


def test_a_used_run_directory_without_resume_is_refused_and_kept(tmp_path):
    quadratic_run(tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match=r"resume=True.*--resume"):
        quadratic_run(tmp_path, epochs=1)
    assert (tmp_path / "metrics.jsonl").read_text() == before


# 7. The commands refuse bad input before they work ----------------------------------------------------------


def quiet(fn, *args, **kw):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        fn(*args, **kw)
    return out.getvalue()


@pytest.mark.parametrize(
    "kw, says",
    [
        pytest.param({"seeds": 0}, r"--seeds.*1 to 1000", id="no-seeds"),
        pytest.param({"seeds": -3}, r"--seeds.*1 to 1000", id="negative-seeds"),
        pytest.param({"seeds": 100_000_000_000}, r"--seeds.*1 to 1000", id="huge-seeds"),
        pytest.param({"steps": -1}, r"--steps.*1 to 20000", id="negative-steps"),
        pytest.param({"steps": 1_000_000_000_000}, r"--steps.*1 to 20000", id="huge-steps"),
        pytest.param({"device": "meta"}, r"--device.*auto, cpu", id="meta-device"),
    ],
)
def test_evaluate_refuses_bad_counts_and_devices_writing_nothing(tmp_path, kw, says):
    with pytest.raises(ValueError, match=says) as e:
        kw = {"steps": 5, "seeds": 2, "lr": 0.1, "out": str(tmp_path / "ev"), **kw}
        quiet(evaluate_cli, "adam", "quadratic", **kw)
    assert "\n" not in str(e.value) and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("start", [None, "rp_s"], ids=["afresh", "start"])
@pytest.mark.parametrize(
    "kw, says",
    [
        pytest.param({"epochs": 0}, r"--epochs.*1 to 100000", id="no-epochs"),
        pytest.param({"epochs": 1_000_000_000_000}, r"--epochs.*1 to 100000", id="huge-epochs"),
        pytest.param({"epoch_len": -5}, r"--epoch-len.*1 to 20000", id="negative-epoch-len"),
        pytest.param({"unroll": 0}, r"--unroll.*1 to 20000", id="no-unroll"),
        pytest.param({"device": "meta"}, r"--device.*auto, cpu", id="meta-device"),
    ],
)
def test_meta_train_afresh_and_from_a_start_refuses_bad_counts_and_devices(tmp_path, start, kw, says):
    with pytest.raises(ValueError, match=says):
        quiet(meta_train_cli, "rp_s", "quadratic", **{"start": start, "out": str(tmp_path / "mt"), **kw})
    assert not (tmp_path / "mt").exists()


@pytest.mark.parametrize("command", [meta_train_cli, evaluate_cli], ids=["meta_train_cli", "evaluate_cli"])
def test_an_out_that_is_a_file_is_refused(tmp_path, command):
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(ValueError, match="--out.*is a file"):
        quiet(command, "rp_s", "quadratic", device="cpu", out=str(tmp_path / "a_file"))
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_meta_train_cli_refuses_a_finished_run_without_resume(tmp_path):
    kw = {"epochs": 2, "epoch_len": 4, "unroll": 2, "device": "cpu", "out": str(tmp_path / "mt")}
    quiet(meta_train_cli, "rp_s", "quadratic", **kw)
    metrics = (tmp_path / "mt" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--resume"):
        quiet(meta_train_cli, "rp_s", "quadratic", **{**kw, "epochs": 1})
    assert (tmp_path / "mt" / "metrics.jsonl").read_text() == metrics
    quiet(meta_train_cli, "rp_s", "quadratic", **{**kw, "epochs": 3, "resume": True})  # extended
    assert len((tmp_path / "mt" / "metrics.jsonl").read_text().splitlines()) == 3


def test_evaluate_writes_a_new_directory_per_run_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kw = {"steps": 5, "seeds": 2, "lr": 0.1, "device": "cpu"}
    printed = [json.loads(quiet(evaluate_cli, "adam", "quadratic", **kw)) for _ in range(2)]
    paths = [Path(p["evaluation"]) for p in printed]
    assert paths[0] != paths[1] and all(p.parent.parent == Path("runs/evaluate") for p in paths)
    assert all((tmp_path / p).is_file() for p in paths)


def test_evaluate_refuses_a_used_out_unless_told_to_overwrite(tmp_path):
    kw = {"steps": 5, "seeds": 2, "lr": 0.1, "device": "cpu", "out": str(tmp_path / "ev")}
    quiet(evaluate_cli, "adam", "quadratic", **kw)
    first = (tmp_path / "ev" / "evaluation.json").read_text()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        quiet(evaluate_cli, "sgd", "quadratic", **kw)
    assert (tmp_path / "ev" / "evaluation.json").read_text() == first
    quiet(evaluate_cli, "sgd", "quadratic", overwrite=True, **kw)
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["rule"] == "sgd"


def test_a_missing_rule_file_is_named():
    for missing in ("no/such/rule", "rule.pt", "fitted.json"):
        with pytest.raises(FileNotFoundError, match=f"no such file: {missing}"):
            load_pretrained(missing)


def test_evaluate_takes_a_rule_object(tmp_path):
    kw = {"steps": 5, "seeds": 2, "device": "cpu", "out": str(tmp_path / "ev")}
    printed = json.loads(quiet(evaluate_cli, AdamRule(lr=0.1), "quadratic", **kw))
    assert printed["rule"] == "AdamRule" and printed["seeds"] == 2
