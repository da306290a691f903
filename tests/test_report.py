"""Report rendering, report plots and exposure by popularity bin: exact values on tiny hand-built data."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from recsys.evaluation import plots, report
from recsys.evaluation.beyond_accuracy import exposure_by_popularity_bin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# exposure_by_popularity_bin


def test_exposure_bins_exact():
    # ranks: item 0 (9), item 1 (5), item 2 (5; the tie goes to the lower index), item 3 (0);
    # 4 items in 2 bins -> bin 0 = {0, 1}, bin 1 = {2, 3}
    popularity = np.array([9, 5, 5, 0])
    topk = np.array([[0, 1, 2], [3, -1, -1], [1, 1, -1]])  # 6 real slots: bin 0 gets 0,1,1,1; bin 1 gets 2,3
    np.testing.assert_allclose(exposure_by_popularity_bin(topk, popularity, n_bins=2), [4 / 6, 2 / 6])


def test_exposure_bins_ties_broken_by_index():
    # all equal popularity: ranks follow the item index, so item 3 is in the least popular bin
    out = exposure_by_popularity_bin(np.array([[3, 0]]), np.zeros(4), n_bins=4)
    np.testing.assert_array_equal(out, [0.5, 0.0, 0.0, 0.5])


def test_exposure_bins_uneven_sizes_and_unsigned_counts():
    # 5 items in 2 bins: ranks 0..4 -> bins floor(r*2/5) = 0,0,0,1,1; uint popularity must not wrap when negated
    popularity = np.array([1, 4, 3, 2, 0], dtype=np.uint32)  # rank order: 1, 2, 3, 0, 4
    out = exposure_by_popularity_bin(np.array([[1, 2, 3, 0, 4]]), popularity, n_bins=2)
    np.testing.assert_allclose(out, [3 / 5, 2 / 5])
    assert out.sum() == pytest.approx(1.0)


def test_exposure_bins_default_ten_bins_one_item_each():
    out = exposure_by_popularity_bin(np.array([[0, 9], [9, -1]]), np.arange(10)[::-1], n_bins=10)
    np.testing.assert_allclose(out, [1 / 3] + [0.0] * 8 + [2 / 3])


def test_exposure_bins_no_slots_and_bad_input():
    np.testing.assert_array_equal(exposure_by_popularity_bin(np.full((2, 3), -1), np.arange(4), 3), [0, 0, 0])
    assert exposure_by_popularity_bin(np.zeros((0, 5), dtype=int), np.arange(4)).shape == (10,)
    with pytest.raises(ValueError, match="outside the catalog"):
        exposure_by_popularity_bin(np.array([[4]]), np.arange(4))
    with pytest.raises(ValueError, match="n_bins"):
        exposure_by_popularity_bin(np.array([[0]]), np.arange(4), n_bins=0)


# ---------------------------------------------------------------------------------------------
# report fixtures

HEAD = ("ndcg_at_10", "recall_at_10", "mrr_at_10", "cold_recall_at_10", "coverage_at_10", "long_tail_share_at_10")


def _report() -> dict:
    return {
        "model_name": "recsys-item-encoder",
        "version": "3",
        "run_id": "abc123",
        "created": "2026-11-28T05:00:00Z",
        "dataset": {
            "name": "online-retail",
            "digest": "9f2c0123456789abcdef",
            "items": 3868,
            "users": 4363,
            "interactions": 268122,
            "split": {"strategy": "basket", "train": 200000, "val": 3000, "test": 3000},
        },
        "code": {"git_sha": "69cb646deadbeef", "recsys_version": "0.1.0", "python": "3.11.9", "torch": "2.13.0+cpu", "device": "cpu"},
        "decision": {
            "promote": False,
            "status": "rejected",
            "primary_metric": "ndcg_at_10",
            "reference": "champion",
            "reasons": ["recall_at_10 0.2000 vs champion 0.2500: -20.0% < required +1.0%", "coverage dropped & <worse>"],
            "checks": [
                {"name": "primary", "metric": "ndcg_at_10", "candidate": 0.25, "reference": 0.2, "reference_model": "champion", "rule": ">= +1.0% relative", "passed": True},
                {"name": "recall", "metric": "recall_at_10", "candidate": 0.2, "reference": 0.25, "reference_model": "champion", "rule": ">= +1.0% relative", "passed": False},
            ],
        },
        "metrics": {
            "test": {
                "candidate": {"ndcg_at_10": 0.25, "recall_at_10": 0.2, "mrr_at_10": 0.1, "cold_recall_at_10": 0.07, "coverage_at_10": 0.4, "long_tail_share_at_10": 0.3, "tail_recall_at_10": 0.05},
                "champion": {"ndcg_at_10": 0.2, "recall_at_10": 0.25, "mrr_at_10": 0.1, "cold_recall_at_10": 0.0, "coverage_at_10": 0.5, "tail_recall_at_10": 0.02},
                "ease": {"ndcg_at_10": 0.3, "recall_at_10": 0.1, "mrr_at_10": 0.05, "coverage_at_10": 0.2, "long_tail_share_at_10": 0.1, "tail_recall_at_10": 0.01},
                "popularity": {"ndcg_at_10": 0.1, "recall_at_10": 0.05, "mrr_at_10": 0.02, "cold_recall_at_10": 0.0, "coverage_at_10": 0.01, "long_tail_share_at_10": 0.0},
            }
        },
        "slices": ["tail_recall_at_10"],
    }


def _md_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| metric"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def _html_rows(html: str, table_class: str = "metrics") -> list[dict[str, str | list[str]]]:
    """(model, raw cells) per row of the first table with that class."""
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', html, re.S).group(1)
    out = []
    for row in re.findall(r"<tr(.*?)>(.*?)</tr>", table, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row[1], re.S)
        if cells:
            out.append({"attrs": row[0], "model": cells[0], "cells": cells[1:]})
    return out


# ---------------------------------------------------------------------------------------------
# version_description


def test_description_vs_champion_exact():
    md = report.version_description(_report())
    # three lines a reviewer can act on come first: decision and primary change, the failed checks, the shelves
    assert md.splitlines()[:3] == [
        "**REJECTED**: ndcg_at_10 0.2500 vs champion 0.2000 (+25.0%; rule >= +1.0% relative)  ",
        "Failed: recall recall_at_10 0.2000 (rule >= +1.0% relative)  ",
        "Shelves: no champion to compare with",
    ]
    first = next(line for line in md.splitlines() if line.startswith("**REJECTED**: recall_at_10"))
    assert first.startswith("**REJECTED**: recall_at_10 0.2000 vs champion 0.2500")
    assert "coverage dropped & <worse>" in first
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header == "| metric | candidate | champion | ease | popularity | Δ vs champion |"
    rows = _md_rows(md)
    assert rows["ndcg_at_10"] == ["0.2500", "0.2000", "0.3000", "0.1000", "+25.0%"]
    assert rows["recall_at_10"][-1] == "-20.0%"
    assert rows["mrr_at_10"][-1] == "+0.0%"
    assert rows["cold_recall_at_10"][-1] == "–"  # champion at 0: no relative change
    assert rows["coverage_at_10"][-1] == "-20.0%"
    assert rows["long_tail_share_at_10"] == ["0.3000", "–", "0.1000", "0.0000", "–"]  # champion lacks it
    assert "**Data:** online-retail (digest `9f2c01234567`), 3,868 items, 4,363 users, 268,122 interactions" in md
    assert "split basket: train 200,000 / val 3,000 / test 3,000" in md
    assert "git `69cb646d`" in md


def test_review_summary_with_churn_and_intervals():
    r = _report()
    r["decision"]["checks"] = [
        {"kind": "primary", "metric": "ndcg_at_10", "candidate": 0.26, "reference": 0.25, "rule": ">= +1.0% relative", "passed": True, "low": 0.01, "high": 0.07, "n": 400},
        {"kind": "guardrail", "metric": "recall_at_10", "candidate": 0.2, "reference": 0.2, "rule": ">= -2.0% relative", "passed": True},
    ]
    r["decision"]["status"] = "promoted"
    r["churn"] = {"k": 10, "churn": 0.55, "changed_entirely": 0.12}
    assert report.review_summary(r) == [
        "**PROMOTED**: ndcg_at_10 0.2600 vs champion 0.2500 (+4.0% [+1.0%, +7.0%] n=400; rule >= +1.0% relative)",
        "Guardrails: all 1 within their rules",
        "Shelves: 55% of the top-10 related-item slots change vs the champion, 12% of the lists entirely",
    ]


def test_review_summary_of_a_first_model_says_when_its_win_is_noise():
    r = _report()
    base = {"kind": "baseline", "metric": "ndcg_at_10", "candidate": 0.0509, "rule": "> baseline", "passed": True}
    r["decision"]["checks"] = [
        dict(base, reference_model="popularity", reference=0.0373, low=0.25, high=0.45, n=2030),
        dict(base, reference_model="ease", reference=0.0501, low=-0.019, high=0.033, n=2030),
    ]
    r["decision"]["status"] = "promoted"
    assert report.review_summary(r)[0] == (
        "**PROMOTED**: first model of this name, 2 of 2 baselines beaten on ndcg_at_10;"
        " over the strongest, ease: +1.6% [-1.9%, +3.3%] n=2030: within noise"
    )
    r["decision"]["checks"][1].update(low=0.01)
    assert report.review_summary(r)[0].endswith("ease: +1.6% [+1.0%, +3.3%] n=2030")
    for check in r["decision"]["checks"]:  # a decision recorded before intervals: the count alone
        check.pop("low")
    assert report.review_summary(r)[0] == "**PROMOTED**: first model of this name, 2 of 2 baselines beaten on ndcg_at_10"


def test_description_without_champion_uses_best_baseline():
    r = _report()
    del r["metrics"]["test"]["champion"]
    md = report.version_description(r)
    assert "| metric | candidate | ease | popularity | Δ vs best baseline |" in md
    rows = _md_rows(md)
    assert rows["ndcg_at_10"][-1] == "-16.7% (ease)"  # (0.25 - 0.3) / 0.3
    assert rows["recall_at_10"][-1] == "+100.0% (ease)"  # (0.2 - 0.1) / 0.1
    assert rows["cold_recall_at_10"][-1] == "–"  # best baseline is 0
    assert rows["long_tail_share_at_10"][-1] == "+200.0% (ease)"


def test_description_truncates_reasons_and_length():
    r = _report()
    r["decision"]["reasons"] = [f"reason {i} " + "x" * 1000 for i in range(30)]
    r["metrics"]["test"].update({f"model_{i}_" + "y" * 60: {"ndcg_at_10": 0.1} for i in range(30)})
    md = report.version_description(r)
    assert len(md) <= report.MAX_DESCRIPTION_CHARS
    assert "reason 0 " in md and "reason 9 " not in md and "… and 22 more" in md
    assert md.endswith("(truncated; see report.html)\n")


def test_description_pending_and_empty():
    assert report.version_description({"model_name": "m"}).startswith("**PENDING**")
    assert report.decision_status({"decision": {"promote": True}}) == "promoted"


# ---------------------------------------------------------------------------------------------
# render_html / write_report


def test_html_rejected_badge_reasons_checks():
    html = report.render_html(_report())
    assert '<span class="badge badge-rejected">rejected</span>' in html
    assert ".badge-rejected { background: #c92a2a; }" in html  # red
    assert "<li>recall_at_10 0.2000 vs champion 0.2500: -20.0% &lt; required +1.0%</li>" in html
    assert "<li>coverage dropped &amp; &lt;worse&gt;</li>" in html
    checks = _html_rows(html, "checks")
    assert [c["cells"] for c in checks] == [
        ["ndcg_at_10", "0.2500", "champion", "0.2000", "+25.0%", "&gt;= +1.0% relative", "pass"],
        ["recall_at_10", "0.2000", "champion", "0.2500", "-20.0%", "&gt;= +1.0% relative", "fail"],
    ]


def test_html_and_description_show_the_interval_and_the_evidence():
    base = _report()
    checks = [dict(c) for c in base["decision"]["checks"]]
    checks[0] |= {"low": 0.05, "high": 0.45, "n": 321}
    r = base | {"decision": base["decision"] | {"checks": checks}, "evidence": "Candidate and champion compared on 321 test users"}
    html = report.render_html(r)
    assert _html_rows(html, "checks")[0]["cells"][4] == "+25.0% [+5.0%, +45.0%] n=321"
    assert '<p class="evidence">Candidate and champion compared on 321 test users</p>' in html
    assert "**Evidence:** Candidate and champion compared on 321 test users" in report.version_description(r)


def test_html_metrics_table_bold_best_and_candidate_row():
    rows = _html_rows(report.render_html(_report()))
    assert [r["model"] for r in rows] == ["candidate", "champion", "ease", "popularity"]
    assert 'class="candidate"' in rows[0]["attrs"] and 'class="candidate"' not in rows[1]["attrs"]
    bold = {r["model"]: [i for i, c in enumerate(r["cells"]) if c.startswith("<b>")] for r in rows}
    # columns: ndcg, recall, mrr, cold, coverage, long tail; mrr ties (0.1) are both bold
    assert bold == {"candidate": [2, 3, 5], "champion": [1, 2, 4], "ease": [0], "popularity": []}
    assert rows[2]["cells"][0] == "<b>0.3000</b>"
    assert rows[1]["cells"][5] == "–" and rows[2]["cells"][3] == "–"


def test_html_slices_data_code_and_no_champion():
    r = _report()
    del r["metrics"]["test"]["champion"]
    html = report.render_html(r)
    slices = re.search(r"<h2>Slices \(test\)</h2>\s*(<table.*?</table>)", html, re.S).group(1)
    assert "<th>tail_recall_at_10</th>" in slices and "<b>0.0500</b>" in slices
    assert "9f2c0123456789abcdef" in html and "268,122" in html and "basket: train 200,000 / val 3,000 / test 3,000" in html
    assert "69cb646deadbeef" in html and "2.13.0+cpu" in html
    assert [row["model"] for row in _html_rows(html)] == ["candidate", "ease", "popularity"]


def test_html_escapes_model_name():
    r = _report()
    r["model_name"] = "<script>alert(1)</script>"
    r["metrics"]["test"]["<script>x</script>"] = {"ndcg_at_10": 0.5}
    html = report.render_html(r)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;script&gt;x&lt;/script&gt;" in html


def test_html_embeds_existing_plots_and_skips_missing(tmp_path: Path):
    png = plots.popularity_bias({"candidate": [0.5, 0.5]}, tmp_path / "p.png")
    r = _report() | {"plots": {"popularity_bias": str(png), "learning_curve": str(tmp_path / "missing.png")}}
    html = report.render_html(r)
    assert html.count('src="data:image/png;base64,') == 1
    assert "<h3>popularity bias</h3>" in html and "learning curve" not in html


def test_write_report(tmp_path: Path):
    r = _report()
    r["metrics"]["test"]["candidate"]["ndcg_at_10"] = np.float64(0.25)  # numpy scalars must serialise
    json_path, html_path = report.write_report(r, tmp_path / "out")
    assert json_path == tmp_path / "out" / "report.json" and html_path == tmp_path / "out" / "report.html"
    assert json.loads(json_path.read_text())["metrics"]["test"]["candidate"]["ndcg_at_10"] == 0.25
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]  # no tmp left


def test_render_does_not_mutate_report():
    r = _report()
    before = copy.deepcopy(r)
    report.render_html(r)
    report.version_description(r)
    assert r == before


# ---------------------------------------------------------------------------------------------
# plots


def _is_png(p: Path) -> bool:
    data = p.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_SIGNATURE


def test_learning_curve(tmp_path: Path):
    out = plots.learning_curve({0: 1.2, 10: 0.9, 20: 0.7}, {0: 0.1, 20: 0.15}, "recall_at_10", tmp_path / "a" / "lc.png", best_step=20)
    assert out == tmp_path / "a" / "lc.png" and _is_png(out)
    # fine-tuning skipped: no losses, only the step-0 validation point
    assert _is_png(plots.learning_curve({}, {0: 0.1}, "recall_at_10", tmp_path / "lc0.png", best_step=0))
    assert _is_png(plots.learning_curve({}, {}, "recall_at_10", tmp_path / "lc_empty.png"))


def test_model_comparison(tmp_path: Path):
    m = _report()["metrics"]["test"]
    out = plots.model_comparison(m, list(HEAD), tmp_path / "cmp.png")  # champion lacks long_tail_share
    assert _is_png(out)
    assert _is_png(plots.model_comparison({"ease": {}, "candidate": {"ndcg_at_10": 0.2}}, ["ndcg_at_10", "x"], tmp_path / "c2.png"))


def test_popularity_bias(tmp_path: Path):
    exposure = {
        "candidate": exposure_by_popularity_bin(np.array([[0, 5, 9]]), np.arange(10)[::-1]),
        "popularity": [1.0] + [0.0] * 9,
        "empty": [],
    }
    assert _is_png(plots.popularity_bias(exposure, tmp_path / "pb.png"))
    assert _is_png(plots.popularity_bias({}, tmp_path / "pb0.png", catalog_share_line=False))


def test_html_names_a_sampled_evaluation_beside_the_metrics():
    r = _report()
    assert "eval_max_users" not in report.render_html(r)  # every user: no note
    r["dataset"]["split"]["eval_sample"] = 2000
    html = report.render_html(r)
    assert "<h2>Metrics (test): a sample of at most 2,000 users per stage (eval_max_users), full ranking</h2>" in html
    assert "eval_sample 2,000" in html  # and in the data section's split line
