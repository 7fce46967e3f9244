"""The README's main job, end to end: `qis demo` with real processes, ptys and MicroPython."""
import json
import subprocess
import sys

QIS = [sys.executable, "-m", "qis.tools.cli.main"]


def test_demo_stores_every_frame_exactly_once(tmp_path):
    proc = subprocess.run([*QIS, "demo", "--devices", "3", "--frames", "200", "--json", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["frames_sent"] == 600
    assert summary["frames_acked"] == 600
    assert summary["frames_stored"] == 600
    assert summary["dead_letters"] == 0
    assert summary["rows_match"] is True  # labels and counters in SQLite == what devices concluded
    # Devices asked what similar cases concluded (every 10th beat; a device with 2 questions
    # still open skips one, so on a busy machine a few fewer) and got an answer each time.
    assert 45 <= summary["queries_asked"] <= 60 and summary["queries_answered"] == summary["queries_asked"]
    assert summary["queries_unanswered"] == 0
    assert summary["outcomes_forwarded"] == 600 and summary["aggregates_match_recomputation"] is True

    export = subprocess.run([*QIS, "outcomes", "export", "--db", str(tmp_path / "outcomes.db")],
                            capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in export.stdout.splitlines()]
    assert len(lines) == 600
    assert {r["device"] for r in lines} == {"ecg-01", "ecg-02", "ecg-03"}
    for row in lines:
        for field in ("device", "counter", "time", "label", "confidence", "fingerprint"):
            assert field in row
        assert len(bytes.fromhex(row["fingerprint"])) == 16
        assert 0 <= row["confidence"] <= 255
    # keys never leave their files
    for key_file in (tmp_path / "keys").glob("*.key"):
        secret = json.loads(key_file.read_text())["key"]
        assert secret not in proc.stdout + proc.stderr + export.stdout
        assert key_file.stat().st_mode & 0o777 == 0o600


def test_demo_compact_frames_with_the_rr_rule(tmp_path):
    import sqlite3

    proc = subprocess.run([*QIS, "demo", "--devices", "2", "--frames", "30", "--profile", "compact", "--model", "rule",
                           "--json", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["frames_stored"], summary["frames_acked"], summary["dead_letters"]) == (60, 60, 0)
    assert summary["rows_match"] is True
    con = sqlite3.connect(tmp_path / "outcomes.db")
    sizes = {n for (n,) in con.execute("SELECT length(frame) FROM outcomes")}
    models = {m for (m,) in con.execute("SELECT model FROM outcomes")}
    assert sizes == {51} and models == {1}  # one LoRaWAN DR0 payload each; model 1 = RR rule


def test_the_federated_demo_answers_at_one_site_from_the_others(tmp_path):
    proc = subprocess.run([*QIS, "demo", "--sites", "3", "--devices", "2", "--frames", "30", "--model", "mixed",
                           "--json", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["sites"] == 3 and summary["frames_stored"] == summary["frames_acked"] == 180
    assert summary["outcomes_forwarded"] == 180
    assert 12 <= summary["queries_asked"] <= 18 and summary["queries_answered"] == summary["queries_asked"]
    assert summary["aggregates_match_recomputation"] is True
    cross = summary["cross_site_answer"]
    assert cross["status_name"] == "answered" and cross["sites"] >= 2
