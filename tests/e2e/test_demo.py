"""`kdforge demo` end to end (quick mode: few epochs; the real numbers are in benchmarks/)."""
import json

from kdforge.demo import run_demo


def test_demo_quick_writes_every_arm(tmp_path):
    results = run_demo(tmp_path / "demo", quick=True)
    saved = json.loads((tmp_path / "demo/metrics.json").read_text())
    for arm in ("teacher", "student_alone", "student_hard_labels", "student_kd", "few_student_alone", "few_student_kd",
                "omit3_student_kd", "omit3_student_kd_calibrated"):
        assert 0.0 <= saved[arm]["accuracy"] <= 1.0
    # the KD arms use the recommended default: T and α were searched and written into the run
    for arm in ("student_kd", "few_student_kd"):
        chosen = json.loads((tmp_path / f"demo/{arm}/auto/auto.json").read_text())["chosen"]["params"]
        assert saved[arm]["temperature"] == chosen["0.temperature"] and saved[arm]["alpha"] == chosen["0.alpha"]
    assert saved["omitted_class"]["calibrated_accuracy_on_omitted"] == saved["omit3_student_kd_calibrated"]["accuracy_class_3"]
    assert saved["omit3_student_kd_calibrated"]["params"] == saved["omit3_student_kd"]["params"]  # only biases are fitted
    assert saved["student_kd"]["params"] * 10 < saved["teacher"]["params"]
    assert "kd_accuracy_on_omitted" in saved["omitted_class"]
    assert saved == json.loads(json.dumps(results))
    report = (tmp_path / "demo/report.md").read_text()
    assert report.count("|") > 20 and "{" not in report  # every placeholder was filled in
    assert f"{100 * (saved['student_kd']['accuracy'] - saved['student_alone']['accuracy']):+.2f}" in report  # the KD gain is stated
    assert (tmp_path / "demo/env.json").exists() and (tmp_path / "demo/teacher/metrics.jsonl").exists()
