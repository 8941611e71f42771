"""The run report: one ``report.md`` and one ``report.html`` per run, under ``<workdir>/<run id>/``.

:func:`write_run_report` builds one list of sections and renders it twice:

- ``report.html``: self-contained (CSS in a <style> element, every image a base64 ``data:`` URI,
  no script, no link to anything); the KFP UI shows it in a sandboxed iframe (the evaluate
  component's ``report_html`` output, a ``kfp.dsl.HTML`` artifact).
- ``report.md``: the same content for the KFP UI's Markdown viewer (``report_md``, ``kfp.dsl.Markdown``).
  That viewer (markdown-to-jsx) loads no relative files, parses no raw HTML and renders at most
  400,000 characters, so images are inlined as ``data:image/...`` URIs while the document stays
  within `MARKDOWN_MAX_CHARS`; an image that does not fit is named, with a pointer to report.html.

Sections: run (candidate and reference), lineage, configuration (its YAML and sha256), training
(per-round means of loss, implicit accuracy, flip rate and the winner-error gap
e_θ(x_w) - e_ref(x_w), and ``training_curves.png`` per optimizer step), evaluation (per-scorer
means with 95% bootstrap CIs, paired win rate, set-level metrics, the plots), the gate and the
registration, samples (``grid.png`` / ``grid.gif``).

Where the facts come from: metrics.json and the figures of the evaluation folder
(:func:`seppo_lib.evaluation.report.write_report`); the lineage from the run identity
(:func:`seppo_lib.identity.lineage_tags`: data version, revision and md5, base model version, git
SHA), the KFP run id (env ``KFP_RUN_ID``, set by the components; else the training runs' tag), env
``SEPPO_IMAGE`` (when the image sets it) and the package version; for a checkpoint of this run
(``bank:``) the training history from this run's ``train_round-<k>`` MLflow runs (:func:`tracked_facts`).

Written by the evaluate step into its folder (which travels as the KFP ``report`` artifact and is
logged to MLflow under ``eval/``) and copied to ``<workdir>/<run id>/`` (:func:`publish_run_report`).
The registration (model name, version, alias) is only known after the register step: calling
:func:`write_run_report` again with ``registration=`` rewrites the report (``seppo run`` does,
after the pipeline, into ``<workdir>/<run id>/``).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seppo_lib import __version__
from seppo_lib.config import SeppoConfig
from seppo_lib.evaluation.plots import with_error_gap
from seppo_lib.steps.common import run_dir

logger = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
MARKDOWN_MAX_CHARS = 400_000  # MAX_MARKDOWN_STR_LENGTH of the KFP UI's MarkdownViewer
TRAIN_STEP_PREFIX = "train_round-"  # MLflow runs of the training rounds (`steps.train_round`)
HISTORY_KEYS = ("loss", "implicit_acc", "flip_rate", "err_policy_w", "err_ref_w", "round")
ROUND_COLUMNS = (("loss", "loss"), ("implicit_acc", "implicit accuracy"), ("flip_rate", "flip rate"),
                 ("err_gap_w", "winner-error gap"))  # fmt: skip
MIME = {".png": "image/png", ".gif": "image/gif"}
History = list[tuple[int, dict[str, float]]]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass(frozen=True)
class Code:
    text: str
    summary: str


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


Block = str | Table | Code | Figure
Section = tuple[str, list[Block]]


@dataclass(frozen=True)
class TrackedFacts:
    """The per-step training history of this run's train_round MLflow runs (or a given one)."""

    history: History = field(default_factory=list)
    note: str | None = None  # why there is none
    kfp_run_id: str | None = None  # the `seppo.kfp_run_id` tag of the training runs


# ---- facts --------------------------------------------------------------------------


def is_run_checkpoint(candidate: str) -> bool:
    """True for `bank:<ckpt id>`: a checkpoint of this config's run, which has a training history."""
    return candidate.startswith("bank:")


def report_dir(cfg: SeppoConfig, candidate: str, eval_dir: str | Path) -> Path:
    """Where an evaluation's report is published: the run folder for a checkpoint of this run, else the evaluation folder."""
    return run_dir(cfg) if is_run_checkpoint(candidate) else Path(eval_dir)


def run_facts(cfg: SeppoConfig, candidate: str, history: History | None = None) -> TrackedFacts:
    """The report's training history: `history` when given, else this run's MLflow rounds for a checkpoint of this run."""
    if not is_run_checkpoint(candidate):
        return TrackedFacts(history or [], note=f"{candidate} is not a checkpoint of run {cfg.run_id}")
    facts = tracked_facts(cfg)
    return facts if history is None else TrackedFacts(history, kfp_run_id=facts.kfp_run_id)


def tracked_facts(cfg: SeppoConfig) -> TrackedFacts:
    """This run's training history from MLflow; empty with a `note` when tracking is off,
    the server is unreachable or nothing was logged (a report never fails a step over tracking)."""
    if not cfg.tracking.enabled:
        return TrackedFacts(note="tracking.enabled is false")
    from mlflow.exceptions import MlflowException

    from seppo_lib.tracking.mlflow_env import fail_fast, probe, resolve_tracking_uri, sqlite_file

    uri = resolve_tracking_uri(cfg)
    db = sqlite_file(uri)
    reason = f"no MLflow database {db}" if db is not None and not db.is_file() else probe(uri)
    if reason is None:
        try:
            with fail_fast():
                return _read_tracked(cfg, uri)
        except (MlflowException, OSError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    logger.warning("run report: no training history from MLflow at %s (%s)", uri, reason)
    return TrackedFacts(note=f"MLflow at {uri}: {reason}")


def _read_tracked(cfg: SeppoConfig, uri: str) -> TrackedFacts:
    from mlflow import MlflowClient

    from seppo_lib.tracking.mlflow_env import SEPPO_RUN_ID_TAG

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return TrackedFacts(note=f"no MLflow experiment {cfg.tracking.experiment!r} at {uri}")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{SEPPO_RUN_ID_TAG}` = '{cfg.run_id}'",
                              max_results=1000, order_by=["attributes.start_time ASC"])  # fmt: skip
    rounds: dict[str, Any] = {}  # step name -> its latest finished run that logged metrics
    for run in runs:
        step = run.data.tags.get("seppo.step", "")
        if step.startswith(TRAIN_STEP_PREFIX) and run.info.status == "FINISHED" and run.data.metrics:
            rounds[step] = run
    rows: dict[int, dict[str, float]] = {}
    for run in rounds.values():
        for key in (k for k in HISTORY_KEYS if k in run.data.metrics):
            for metric in client.get_metric_history(run.info.run_id, key):
                rows.setdefault(int(metric.step), {})[key] = float(metric.value)
    history = sorted(rows.items())
    kfp_run_id = next((r.data.tags["seppo.kfp_run_id"] for r in rounds.values() if "seppo.kfp_run_id" in r.data.tags), None)
    return TrackedFacts(history, None if history else f"no training metrics logged for run {cfg.run_id}", kfp_run_id)


def lineage_rows(cfg: SeppoConfig, facts: TrackedFacts) -> list[tuple[str, str]]:
    """(what, value) of the run's identity (`seppo_lib.identity.lineage_tags`), code, image, pipeline
    run, data and base model; a fact that is not known says so."""
    from seppo_lib.identity import lineage_tags

    tags = lineage_tags(cfg)
    requested = tags.get("seppo.data_rev_requested")
    base, asked = tags.get("seppo.base_model_uri"), tags.get("seppo.base_model_requested")
    fallback = " (model.fallback)" if tags.get("seppo.base_model_fallback") == "true" else ""
    rows = [
        ("run id", cfg.run_id),
        ("identity hash (training inputs)", tags.get("seppo.identity_hash")),
        ("config hash (sha256)", cfg.config_hash()),
        ("code (git SHA)", tags.get("seppo.git_sha")),
        ("seppo version", __version__),
        ("image", os.environ.get("SEPPO_IMAGE")),
        ("KFP run id", os.environ.get("KFP_RUN_ID") or facts.kfp_run_id),
        ("data source", " ".join(filter(None, (cfg.data.source, cfg.data.dvc_repo)))),
        ("data version", tags.get("seppo.data_version")),
        ("data revision (git SHA)", tags.get("seppo.data_rev", "") + (f" (requested {requested})" if requested else "")),
        ("data md5", tags.get("seppo.data_md5")),
        ("base model", f"{base} (requested {asked})" if asked and asked != base else base),
        ("base model version", tags.get("seppo.base_model", "") + fallback),
        ("bank", f"{cfg.bank.uri} (run {cfg.run_id})"),
    ]  # fmt: skip
    return [(what, str(value) if value else "not recorded") for what, value in rows]


def round_rows(history: History) -> list[tuple[str, ...]]:
    """Per round: updates, optimizer steps, then the mean of each ROUND_COLUMNS metric ('-' if not logged)."""
    by_round: dict[int, list[tuple[int, dict[str, float]]]] = {}
    for step, row in history:
        by_round.setdefault(int(row.get("round", 0)), []).append((step, with_error_gap(row)))
    out = []
    for k, points in sorted(by_round.items()):
        steps = [s for s, _ in points]
        means = []
        for key, _ in ROUND_COLUMNS:
            values = [row[key] for _, row in points if key in row]
            means.append(f"{sum(values) / len(values):.4g}" if values else "-")
        out.append((str(k), str(len(points)), f"{min(steps)}-{max(steps)}", *means))
    return out


def _ci(summary: dict[str, float]) -> str:
    return f"{summary['mean']:.4g} [{summary['ci_lo']:.4g}, {summary['ci_hi']:.4g}]"


def evaluation_table(metrics: dict[str, Any]) -> Table:
    header = ("scorer", "candidate mean [95% CI]", "reference mean [95% CI]", "win rate [95% CI]", "prompts")
    rows = []
    for name, s in metrics["scorers"].items():
        w = s["win_rate"]
        rows.append((name, _ci(s["candidate"]), _ci(s["champion"]), f"{w['rate']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}]", str(w["n"])))
    for name, v in (metrics.get("set_metrics") or {}).items():
        rows.append((name, f"{v['candidate']:.4g}", f"{v['champion']:.4g}", "set-level (lower is better)", str(metrics["n_prompts"])))
    return Table(header, rows)


def gate_blocks(cfg: SeppoConfig, metrics: dict[str, Any], registration: dict[str, Any] | None) -> list[Block]:
    g = metrics["gate"]
    verdict = "PASSES" if g["passes"] else "FAILS"
    blocks: list[Block] = [
        f"{g['metric']} ({g['direction']} is better, margin {g['min_margin']:g}): candidate {g['candidate']:.4g} vs "
        f"reference {g['champion']:.4g} -> the gate {verdict}."
    ]
    if registration:
        champion = registration.get("champion")
        blocks.append(Table(("registered model", "version", "decision", "champion", "reason"), [(
            str(registration.get("model_name", "?")), f"v{registration.get('version', '?')}", str(registration.get("decision", "?")),
            f"v{champion}" if champion else "none", str(registration.get("reason") or ""),
        )]))  # fmt: skip
    elif not cfg.tracking.enabled:
        blocks.append("Not registered: tracking.enabled is false (the model registry is MLflow's).")
    else:
        blocks.append("Registration: not in this copy of the report; the register step runs after the evaluation "
                      "(its `registration` output; `seppo run` rewrites this report with it).")
    return blocks


# ---- sections -----------------------------------------------------------------------


def _figures(eval_dir: Path, pattern: str, caption: str) -> list[Block]:
    return [Figure(p, caption.format(name=p.stem.split("_", 1)[-1])) for p in sorted(eval_dir.glob(pattern))]


def build_sections(
    cfg: SeppoConfig, eval_dir: Path, metrics: dict[str, Any], facts: TrackedFacts, registration: dict[str, Any] | None
) -> list[Section]:
    from seppo_lib.steps.evaluate import reference_label

    reference = reference_label(cfg, metrics["champion"])  # "base model (<uri>)" or "champion"
    reference_row = reference if metrics["champion"] in reference else f"{reference}: {metrics['champion']}"
    config_yaml = yaml.safe_dump(json.loads(cfg.to_json()), sort_keys=False)
    rounds = round_rows(facts.history)
    training: list[Block] = [
        Table(("round", "updates", "steps", *(label for _, label in ROUND_COLUMNS)), rounds) if rounds
        else f"No training history: {facts.note or 'none was given'}.",
        *_figures(eval_dir, "training_curves.png", "Training curves per optimizer step (dashed lines: round boundaries)"),
    ]
    grid = [p for p in (eval_dir / "grid.png", eval_dir / "grid.gif") if p.is_file()]
    return [
        ("Run", [Table(("", "model"), [("candidate", metrics["candidate"]), ("reference", reference_row),
                                  ("prompts x images", f"{metrics['n_prompts']} x {metrics['images_per_prompt']}")])]),
        ("Lineage", [Table(("what", "value"), lineage_rows(cfg, facts))]),
        ("Configuration", [f"config {cfg.name}, sha256 {cfg.config_hash()}",
                           Code(config_yaml, f"resolved config ({cfg.name}, sha256 {cfg.config_hash()[:10]})")]),
        ("Training", training),
        ("Evaluation", [evaluation_table(metrics),
                        *_figures(eval_dir, "accuracy_*.png", "{name}: accuracy with 95% bootstrap CIs"),
                        *_figures(eval_dir, "hist_*.png", "{name}: per-image scores")]),
        ("Gate and registration", gate_blocks(cfg, metrics, registration)),
        ("Samples", [Figure(p, f"candidate (left) vs {reference} (right), same prompt and seed") for p in grid[:1]]
         or ["No sample grid in the evaluation folder."]),
    ]  # fmt: skip


# ---- rendering ----------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def data_uri(path: Path) -> str:
    return f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _md_block(block: Block) -> str:
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md(c) for c in block.header) + " |", "|" + "---|" * len(block.header)]
        return "\n".join(lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in block.rows])
    if isinstance(block, Code):
        return f"{_md(block.summary)}:\n\n```yaml\n{block.text.rstrip()}\n```"
    if isinstance(block, Figure):
        return f"{_md(block.caption)} ({block.path.name}):\n\n![{_md(block.path.name)}](%IMAGE%)"
    return _md(block)


def to_markdown(title: str, sections: list[Section], max_chars: int = MARKDOWN_MAX_CHARS) -> str:
    """The report as Markdown; figures inlined as data URIs in document order while it stays within
    `max_chars` (each figure's fallback line is counted first, so inlining never pushes it over)."""
    parts: list[tuple[str, Figure | None]] = [(f"# {_md(title)}", None)]
    for heading, blocks in sections:
        parts.append((f"## {_md(heading)}", None))
        parts += [(_md_block(b), b if isinstance(b, Figure) else None) for b in blocks]
    texts = [text if fig is None else _not_inlined(fig, max_chars) for text, fig in parts]
    used = sum(len(t) for t in texts) + 2 * (len(texts) - 1) + 1
    for k, (text, fig) in enumerate(parts):
        if fig is not None:
            inlined = text.replace("%IMAGE%", data_uri(fig.path))
            if used - len(texts[k]) + len(inlined) <= max_chars:
                used += len(inlined) - len(texts[k])
                texts[k] = inlined
    return "\n\n".join(texts) + "\n"


def _not_inlined(fig: Figure, max_chars: int) -> str:
    return (f"{_md(fig.caption)}: {_md(fig.path.name)} is not inlined here (the KFP Markdown viewer shows at most "
            f"{max_chars:,} characters); see report.html or the evaluation folder.")  # fmt: skip


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:1rem auto;padding:0 1rem;color:#141414}"
    "table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
    "th{background:#f3f3f3}pre{background:#f8f8f8;padding:.5rem;overflow:auto}img{max-width:100%}"
    "figure{margin:.75rem 0}figcaption{font-size:.9rem;color:#555}"
)


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Table):
        head = "".join(f"<th>{e(c)}</th>" for c in block.header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Code):
        return f"<details><summary>{e(block.summary)}</summary><pre><code>{e(block.text)}</code></pre></details>"
    if isinstance(block, Figure):
        return (f'<figure><img src="{data_uri(block.path)}" alt="{e(block.path.name)}">'
                f"<figcaption>{e(block.caption)} ({e(block.path.name)})</figcaption></figure>")  # fmt: skip
    return f"<p>{e(block)}</p>"


def to_html(title: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page (inline CSS, images as data URIs, no scripts or links)."""
    body = "".join(
        f"<section><h2>{html.escape(h)}</h2>{''.join(_html_block(b) for b in blocks)}</section>" for h, blocks in sections
    )
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")  # fmt: skip


def write_run_report(
    cfg: SeppoConfig,
    eval_dir: str | Path,
    out_dir: str | Path,
    *,
    facts: TrackedFacts | None = None,
    registration: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write `out_dir`/report.md and report.html from the evaluation folder `eval_dir` (metrics.json and figures).

    facts: the training history (default: :func:`run_facts` of metrics.json's candidate);
    registration: the register step's result, once known.
    """
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    facts = run_facts(cfg, metrics["candidate"]) if facts is None else facts
    title = f"seppo run report: {cfg.run_id}"
    sections = build_sections(cfg, eval_dir, metrics, facts, registration)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / REPORT_MD, out_dir / REPORT_HTML
    md.write_text(to_markdown(title, sections), encoding="utf-8")
    page.write_text(to_html(title, sections), encoding="utf-8")
    logger.info("run report: %s, %s", md, page)
    return md, page


def publish_run_report(cfg: SeppoConfig, candidate: str, eval_dir: str | Path, facts: TrackedFacts) -> tuple[Path, Path]:
    """The evaluate step's report: written into the evaluation folder (so it travels with it: the KFP
    `report` artifact, MLflow's eval/ artifacts) and copied to :func:`report_dir`; returns the copies there."""
    files = write_run_report(cfg, eval_dir, eval_dir, facts=facts)
    out = report_dir(cfg, candidate, eval_dir)
    if out.resolve() == Path(eval_dir).resolve():
        return files
    out.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(files[0], out / REPORT_MD)), Path(shutil.copyfile(files[1], out / REPORT_HTML))
