"""`make run`'s machinery on the real notebooks at scale "test": a stage that fails stops the run naming
itself and its executed notebook, a resumed run keeps the completed stages, stages chain through the run
directory, the same parameters give the same numbers, and the report holds the stage summaries. Also:
README.md is generated."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symbolic_l2o.pipeline import (
    StageFailed,
    _notebook_parameters,
    pipeline_stages,
    run_pipeline,
    read_notebook,
)
from symbolic_l2o.report import build_report, export_outputs, readme_markdown
from symbolic_l2o.expressions import SymbolicRule
from symbolic_l2o.files import load_rule
from symbolic_l2o.learned_rules import TanhBasisRule
from symbolic_l2o.regression import FittedRule

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
STAGE = "02_srgen"  # the quickest stage that writes an artifact and a summary


def test_every_stage_notebook_takes_the_pipeline_parameters_and_papermill_sees_them():
    stages = pipeline_stages(NBS)
    assert [p.stem for p in stages][:12] == [
        "00_optimizers",
        "00a_features",
        "00b_expressions",
        "00c_learned_rules",
        "00d_files",
        "00e_tasks",
        "00f_evaluation",
        "00g_zoo",
        "00h_runs",
        "00i_rule_optimizer",
        "01_meta_train",
        "02_srgen",
    ]
    for path in stages:
        params = _notebook_parameters(read_notebook(path))
        if not params:
            continue  # a lesson without parameters (00) runs as it is
        assert {"scale", "device", "out_dir"} <= set(params), f"{path.name} parameters: {params}"
        nb = json.loads(path.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, (
            f"{path.name}: the parameters cell lacks papermill's metadata tag: "
            "run `.venv/bin/python -m symbolic_l2o.report tag-parameters` and commit"
        )


@pytest.fixture(scope="module")
def failed_then_resumed(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "test-run"
    with pytest.raises(StageFailed) as failure:
        run_pipeline(
            run_dir,
            "test",
            nbs_path=NBS,
            stages=[STAGE],
            overrides={STAGE: {"scale": "no-such-scale"}},
            progress=False,
        )
    failed_record = json.loads((run_dir / "pipeline.json").read_text())
    # before the resumed run replaces it
    failed_record["executed_notebook"] = failure.value.notebook.read_text()
    first = []
    run_pipeline(run_dir, "test", nbs_path=NBS, stages=[STAGE], progress=False, log=first.append)
    again = []
    run_pipeline(run_dir, "test", nbs_path=NBS, stages=[STAGE], progress=False, log=again.append)
    return run_dir, failure.value, failed_record, first, again


def test_a_failing_stage_names_itself_and_the_notebook_to_open(failed_then_resumed):
    run_dir, failure, record, _, _ = failed_then_resumed
    assert failure.stage == STAGE and failure.notebook == run_dir / f"{STAGE}.ipynb"
    message = str(failure)
    assert f"stage {STAGE} failed" in message and "KeyError" in message and "no-such-scale" in message
    assert str(run_dir / f"{STAGE}.ipynb") in message and f"RESUME={run_dir}" in message
    assert record["stages"][STAGE]["status"] == "failed"
    # the failing cell
    assert "KeyError" in record["executed_notebook"] and "no-such-scale" in record["executed_notebook"]


def test_resume_runs_the_missing_stage_then_keeps_it(failed_then_resumed):
    run_dir, _, _, first, again = failed_then_resumed
    assert any(f"{STAGE}: done" in line for line in first)
    assert again == [f"[1/1] {STAGE}: completed earlier, kept ({STAGE}.ipynb)"]
    assert (run_dir / f"{STAGE}.done").exists()
    assert json.loads((run_dir / "pipeline.json").read_text())["stages"][STAGE]["status"] == "done"


def test_stages_chain_through_the_run_directory(failed_then_resumed):
    run_dir = failed_then_resumed[0]
    assert (run_dir / "sr_rp_si.npz").exists() and (
        run_dir / "sr_rp_si.json"
    ).exists()  # 02's artifact for 03
    summary = json.loads((run_dir / "summary" / f"{STAGE}.json").read_text())
    rows = dict((r[0], r[1]) for r in next(iter(summary["tables"].values()))["rows"])
    assert rows["lags L"] == 20 and rows["features of RP_si"] and rows["runs (fresh problems)"] == 4


def test_same_parameters_give_the_same_numbers(failed_then_resumed, tmp_path):
    run_pipeline(tmp_path / "again", "test", nbs_path=NBS, stages=[STAGE], progress=False)
    a, b = (
        json.loads((d / "summary" / f"{STAGE}.json").read_text())["tables"]
        for d in (failed_then_resumed[0], tmp_path / "again")
    )
    assert a == b


def test_report_holds_every_summary(failed_then_resumed, tmp_path):
    run_dir = failed_then_resumed[0]
    bench = tmp_path / "results.json"
    bench.write_text(
        json.dumps(
            {
                "machine": {"cpus": 2},
                "benchmarks": {
                    "optimizer_step": {"ratio": 1.19, "rule_ms": 31.0},
                    "meta_train_scaling": {"seconds_per_window": {"5": 0.1, "10": 0.2, "20": 0.4, "40": 0.8}},
                },
            }
        )
    )
    md, page = build_report(run_dir, bench=bench)
    text = md.read_text()
    assert "](figures/bench-meta_train_scaling-seconds_per_window.png)" in text  # the scalability plot
    assert (run_dir / "figures" / "bench-meta_train_scaling-seconds_per_window.png").stat().st_size > 0
    assert f"## {STAGE}" in text and "SR datasets recorded" in text and "| lags L | 20 |" in text
    assert "**optimizer_step**" in text and "| ratio | 1.19 |" in text
    assert "| 02_srgen | done |" in text
    html = page.read_text()
    assert "<table>" in html and "SR datasets recorded" in html


def test_outputs_go_back_into_the_notebooks_clean(failed_then_resumed, tmp_path):
    from nbdev.clean import nbdev_clean

    nbs = tmp_path / "nbs"
    shutil.copytree(NBS, nbs)
    edited_path = nbs / f"{STAGE}.ipynb"  # a cell edited after the run: its new source stays, without outputs
    nb = json.loads(edited_path.read_text())
    edited = next(c for c in nb["cells"] if c["cell_type"] == "code" and "show_doc" in "".join(c["source"]))
    edited["source"] = "".join(edited["source"]) + "  # edited while the run went on"
    edited_path.write_text(json.dumps(nb, indent=1))
    written = export_outputs(failed_then_resumed[0], nbs)
    assert [(p.name, stale) for p, stale in written.items()] == [(f"{STAGE}.ipynb", 1)]
    before, after = (json.loads((d / f"{STAGE}.ipynb").read_text()) for d in (NBS, nbs))
    assert len(after["cells"]) == len(before["cells"])  # no injected cell
    assert [c["source"] for c in after["cells"] if c["id"] != edited["id"]] == [
        c["source"] for c in before["cells"] if c["id"] != edited["id"]
    ]
    mine = next(c for c in after["cells"] if c["id"] == edited["id"])
    assert "".join(mine["source"]).endswith("# edited while the run went on") and mine["outputs"] == []
    assert sum(bool(c.get("outputs")) for c in after["cells"]) >= 3
    assert "papermill" not in after["metadata"]
    assert all(not set(c["metadata"]) & {"papermill", "execution"} for c in after["cells"])
    text = (nbs / f"{STAGE}.ipynb").read_text()
    nbdev_clean(fname=str(nbs / f"{STAGE}.ipynb"))  # make test's no-diff check passes with the outputs in
    assert (nbs / f"{STAGE}.ipynb").read_text() == text


def test_cli_reports_a_failure_with_exit_status_1(tmp_path):
    run_dir = tmp_path / "cli-run"
    (run_dir).mkdir()
    (run_dir / "pipeline.json").write_text(json.dumps({"scale": "paper", "device": "auto", "stages": {}}))
    out = subprocess.run(
        [sys.executable, "-m", "symbolic_l2o.report", "run", str(run_dir), "--scale", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "resume it with that scale" in out.stderr


def test_readme_is_generated_from_index_notebook():
    assert (ROOT / "README.md").read_text() == readme_markdown(NBS / "index.ipynb"), (
        "README.md differs from nbs/index.ipynb: run `make readme` (never edit README.md by hand)"
    )


# The stages that chain (those that take the pipeline's parameters): `make run` also executes the lessons
# between them, which nbdev_test runs already and which read and write nothing in the run directory
CHAIN = [p.stem for p in pipeline_stages(NBS) if _notebook_parameters(read_notebook(p))]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "chain"
    return run_dir, run_pipeline(run_dir, "test", nbs_path=NBS, stages=CHAIN, progress=False)


def test_the_stages_chain_link_by_link_with_hashes(whole_run):
    run_dir, record = whole_run
    stages = record["stages"]
    assert list(stages) == CHAIN == ["01_meta_train", "02_srgen", "03_distill", "04_finetune_resnet"]
    link = lambda stage, role, path: next(a for a in stages[stage][role] if a["path"] == path)
    # every input is an earlier stage's output in this run (same bytes) or a file of the shipped zoo, marked
    # so
    written = {}
    for stage, r in stages.items():
        for a in r.get("inputs", []):
            assert a.get("zoo") or written.get(a["path"]) == a["sha256"], (
                f"{stage} read {a} that no earlier stage wrote"
            )
        written.update((a["path"], a["sha256"]) for a in r.get("outputs", []))
    for path, digest in written.items():  # the hashes are those of the files on disk
        assert hashlib.sha256((run_dir / path).read_bytes()).hexdigest() == digest, path
    # 01 trains RP_si -> 02 records it -> 03 fits 02's recording of it -> 04 deploys 03's equation
    assert link("02_srgen", "inputs", "rules/rp_si.pt") == link("01_meta_train", "outputs", "rules/rp_si.pt")
    assert link("03_distill", "inputs", "sr_rp_si.npz") == link("02_srgen", "outputs", "sr_rp_si.npz")
    assert link("03_distill", "inputs", "rules/rp_si.pt") == link(
        "01_meta_train", "outputs", "rules/rp_si.pt"
    )
    assert link("04_finetune_resnet", "inputs", "fitted_rp_si.json") == link(
        "03_distill", "outputs", "fitted_rp_si.json"
    )
    assert (
        json.loads((run_dir / "sr_rp_si.json").read_text())["meta"]["rule"]
        == json.loads((run_dir / "rules" / "rp_si.json").read_text())["config"]
    )
    # one equation: 04 deploys the very equation 03 selected, within the state budget 03 selected it in
    distilled = json.loads((run_dir / "summary" / "distill.json").read_text())["rules"]["rp_si"]
    deployed = json.loads((run_dir / "summary" / "finetune.json").read_text())["source"]
    assert deployed["equation"] == distilled["equation"]
    assert deployed["sha256"] == link("03_distill", "outputs", "fitted_rp_si.json")["sha256"]
    assert distilled["state_per_param"] <= distilled["state_budget"]
    finetune = json.loads((run_dir / "summary" / "finetune.json").read_text())
    assert finetune["deployed"]["equation"] == distilled["equation"] and finetune["deployed"]["within_budget"]
    assert set(distilled["null_models"]) == {"sgd", "momentum", "adam", "lp_adam", "lion"}
    assert {"margin", "ci", "best_null"} <= set(distilled["beyond_null"])
    text = build_report(run_dir, bench=None)[0].read_text()
    assert "*Read:* `rules/rp_si.pt`" in text and "`fitted_rp_si.json` sha256" in text


def test_04_in_the_chain_tunes_every_optimizer_on_validation_and_deploys_03s_equation(whole_run):
    """04 as the chain runs it (03's equation of this run): every optimizer of its table, each with the best
    value of its grid chosen on validation, at least 3 seeds with an interval, its step time and state; the
    meta-tuned equation and ψ written as rules."""
    out = whole_run[0]
    summary = json.loads((out / "summary" / "04_finetune_resnet.json").read_text())
    assert summary["inputs"][0]["path"] == "fitted_rp_si.json"  # 03's equation of this run, not the zoo's
    ((title, table),) = [(t, v) for t, v in summary["tables"].items() if t.startswith("One protocol")]
    assert {r[0] for r in table["rows"]} == {
        "Symbolic L2O (meta-tuned)",
        "ψ γ·tanh (meta-trained)",
        "SGD+cos",
        "SGD+mom+cos",
        "Nesterov+cos",
        "Adam+cos",
        "AdamW+cos",
        "Lion+cos",
    }
    assert not any("best" in c for c in table["columns"])  # nothing picked on the test set
    assert any(t.startswith("Scalability") for t in summary["tables"])
    assert all((out / f).exists() for f in summary["figures"].values())
    ft = json.loads((out / "summary" / "finetune.json").read_text())
    fitted = out / "fitted_rp_si.json"
    assert ft["source"] == {
        "path": "fitted_rp_si.json",
        "sha256": hashlib.sha256(fitted.read_bytes()).hexdigest(),
        "equation": str(FittedRule.load(fitted).expr),  # 03's equation, deployed as it is
    }
    assert {
        "summary/finetune.json",
        *(f"tuned_{r}.{x}" for r in ("symbolic", "tanh_basis") for x in ("pt", "json")),
    } <= {a["path"] for a in summary["outputs"]}
    assert len(ft["optimizers"]) == 8
    for name, o in ft["optimizers"].items():
        assert (
            o["best_lr"] in o["lr_grid"] and len(o["lr_grid"]) >= 3 and o["val_metric"] == max(o["val_acc"])
        ), name
        assert len(o["seeds"]) >= 3 and o["test_acc_ci"][0] <= o["test_acc_mean"] <= o["test_acc_ci"][1], name
        assert o["step_ms"] > 0 and o["state_bytes_per_param"] >= 0, name
    assert ft["optimizers"]["adam_cosine"]["state_bytes_per_param"] >= 8  # two float32 moments
    tuned, card = load_rule(out / "tuned_symbolic.pt")
    assert isinstance(tuned, SymbolicRule) and (
        card["multiplier"] in card["multiplier_scores"]
        or str(card["multiplier"]) in card["multiplier_scores"]
    )
    psi, psi_card = load_rule(out / "tuned_tanh_basis.pt")
    assert isinstance(psi, TanhBasisRule) and psi_card["before"] != psi_card["after"]  # ψ was meta-trained
