"""Benchmarks run on any data and write records with named fields."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, holoport_cmd


def test_codec_benchmark_writes_json_markdown_and_plot(mvub_frames, tmp_path):
    import subprocess

    data = tmp_path / "frames"
    data.mkdir()
    smallest = min(mvub_frames, key=lambda p: p.stat().st_size)
    (data / smallest.name).symlink_to(smallest)
    out = tmp_path / "codec.json"
    result = subprocess.run(
        holoport_cmd("bench", "codec", "--data", str(data), "--repeats", "1", "--steps", "16",
                     "--json", str(out), "--markdown", str(tmp_path / "codec.md"),
                     "--plot", str(tmp_path / "codec.png")),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(out.read_text())
    configs = {(r["codec"], r["params"]) for r in records}
    assert {("octree", "lossless slices=1"), ("octree", "step=16 slices=1"),
            ("octree", "lossless slices=2"), ("baseline", "bits=8 zstd=3"),
            ("draco", "level=1"), ("draco", "level=7")} <= configs
    for r in records:
        assert {"frame", "codec", "params", "points", "geom_bpp", "color_bpp", "total_bpp",
                "d1_psnr", "y_psnr", "encode_ms", "decode_ms", "bpp_vs_draco"} <= set(r)
        assert r["frame"] == smallest.stem and r["points"] > 10_000
        assert r["d1_psnr"] is None  # every codec here keeps the geometry lossless
        assert 0 < r["geom_bpp"] < r["total_bpp"]
        assert abs(r["geom_bpp"] + r["color_bpp"] - r["total_bpp"]) < 1e-9
        lossless = r["codec"] != "octree" or r["params"].startswith("lossless")
        assert (r["y_psnr"] is None) == lossless
        if not lossless:
            assert 30 < r["y_psnr"] < 60
    draco7 = next(r for r in records if r["params"] == "level=7")
    assert draco7["bpp_vs_draco"] == 1.0
    assert (tmp_path / "codec.png").stat().st_size > 5_000
    assert "| frame |" in (tmp_path / "codec.md").read_text()


def test_codec_benchmark_explains_an_empty_folder(tmp_path):
    import subprocess

    result = subprocess.run(holoport_cmd("bench", "codec", "--data", str(tmp_path)), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "no PLY frames" in result.stderr


def test_hub_benchmark_forwards_through_a_real_hub_with_and_without_curve(tmp_path):
    import subprocess

    out = tmp_path / "hub.json"
    result = subprocess.run(
        holoport_cmd("bench", "hub", "--participants", "2", "3", "--seconds", "1", "--fps", "20",
                     "--frame-bytes", "20000", "--json", str(out), "--markdown", str(tmp_path / "hub.md"),
                     "--plot", str(tmp_path / "hub.png")),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(out.read_text())
    assert sorted((r["participants"], r["curve"]) for r in records) == [
        (2, False), (2, True), (3, False), (3, True)]
    for r in records:
        assert {"participants", "curve", "frame_bytes", "forwarded_mbps", "hub_cpu_s_per_gbit",
                "added_p50_ms", "added_p99_ms", "credited_drops", "stale_replaced"} <= set(r)
        assert r["credited_drops"] == 0  # light load: nothing with credit is lost
        # each sender's frames reach the other n - 1: about fps * bytes * 8 * n * (n - 1)
        expected = 20 * 20_000 * 8 * r["participants"] * (r["participants"] - 1) / 1e6
        assert 0.6 * expected < r["forwarded_mbps"] < 1.3 * expected, r
        assert r["hub_cpu_s_per_gbit"] > 0 and 0 <= r["added_p50_ms"] <= r["added_p99_ms"] < 200
    assert (tmp_path / "hub.png").stat().st_size > 5_000


def test_link_benchmark_sweeps_any_traces_and_writes_records_and_plots(tmp_path):
    """Traces written here (no shared data needed): one walking-kind trace with a dead
    second, one LTE-kind; the committed ladder of real codec sizes."""
    import subprocess

    (tmp_path / "traces" / "5g").mkdir(parents=True)
    (tmp_path / "traces" / "4g").mkdir()
    walk = [200.0] * 20 + [0.0] * 2 + [200.0] * 18
    (tmp_path / "traces" / "5g" / "t_walking").write_text("".join(f"{i + 1}\t{v}\n" for i, v in enumerate(walk)))
    (tmp_path / "traces" / "4g" / "t_lte").write_text("".join(f"{i + 1}\t{20 + 10 * (i % 3)}\n" for i in range(40)))
    out = tmp_path / "link.json"
    result = subprocess.run(
        holoport_cmd("bench", "link", "--traces", str(tmp_path / "traces"), "--profiles", "mmwave-walking",
                     "lte", "wired", "--seeds", "1", "--seconds", "40", "--json", str(out),
                     "--markdown", str(tmp_path / "link.md"), "--plot", str(tmp_path / "link.png")),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uplink = downlink x 0.3" in result.stdout  # the scaling is said
    records = json.loads(out.read_text())
    runs = [r for r in records if r["trace"] != "all"]
    assert {(r["trace"], r["profile"]) for r in runs} == {
        ("t_walking", "mmwave-walking"), ("t_lte", "lte"), ("synthetic-0", "wired")}
    for r in records:
        assert {"trace", "profile", "policy", "fps", "late_or_skipped", "p50_ms", "p95_ms", "p99_ms",
                "stall_ratio", "utilization", "mean_y_psnr"} <= set(r)
        assert 0 <= r["late_or_skipped"] <= 1 and 0 < r["fps"] <= 30.0001
        ways = ("late_share", "skipped_share", "dropped_share", "replaced_share", "lost_share", "undecodable_share")
        assert sum(r[k] for k in ways) == pytest.approx(r["late_or_skipped"])  # every miss, one way each
    walking = {r["policy"]: r for r in runs if r["profile"] == "mmwave-walking"}
    assert walking["fixed"]["late_or_skipped"] >= 2 / 40  # two dead seconds of forty
    assert walking["fixed"]["skipped_share"] == 0 < walking["adaptive"]["skipped_share"]  # fixed never skips
    assert walking["adaptive"]["zero_capacity_share"] == 2 / 40
    wired = {r["policy"]: r for r in runs if r["profile"] == "wired"}
    assert all(r["late_or_skipped"] == 0 for r in wired.values())
    for name in ("link.png", "link-timeline-mmwave-walking.png", "link-timeline-lte.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    assert "| profile |" in (tmp_path / "link.md").read_text()


def test_live_rate_benchmark_writes_records_and_a_plot(tmp_path, recording):
    """On a recording given as its data (the default is the synthetic person)."""
    import subprocess

    out = tmp_path / "live.json"
    result = subprocess.run(
        holoport_cmd("bench", "live", "--mbps", "3", "--policies", "adaptive", "--seconds", "4",
                     "--source", str(recording), "--json", str(out), "--plot", str(tmp_path / "live.png")),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (r,) = json.loads(out.read_text())
    assert {"policy", "uplink_mbps", "top_rung_mbps", "sent_fps", "received_fps", "p50_ms", "p95_ms",
            "sent_mbps", "mean_lod", "skipped"} <= set(r)
    assert r["policy"] == "adaptive" and r["uplink_mbps"] == 3.0 and r["source"] == str(recording)
    assert r["received_fps"] > 5 and 0 < r["p50_ms"] <= r["p95_ms"] < 2000
    assert (tmp_path / "live.png").stat().st_size > 5_000


def test_capture_benchmark_measures_every_stage(tmp_path, data_dir):
    import subprocess

    out = tmp_path / "capture.json"
    result = subprocess.run(
        holoport_cmd("bench", "capture", "--data", str(data_dir), "--resolutions", "640x480", "--cores", "1",
                     "--frames", "3", "--json", str(out), "--markdown", str(tmp_path / "capture.md"),
                     "--plot", str(tmp_path / "capture.png")),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(out.read_text())
    assert all({"stage", "resolution", "cores", "fps"} <= set(r) for r in records)
    sources = {r["source"] for r in records}
    assert "synthetic" in sources
    for source in sources:
        stages = {r["stage"]: r for r in records if r["source"] == source}
        assert set(stages) == {"decode", "register", "backproject", "cut", "voxelize", "total"}
        assert all(r["fps"] > 0 for r in stages.values())
        # total runs the whole path (it ends with the voxelized cloud), and cutting and
        # voxelizing drop points; how the speeds compare is the benchmark's to show, not a test's
        assert stages["total"]["points"] == stages["voxelize"]["points"]
        assert 0 < stages["voxelize"]["points"] <= stages["cut"]["points"] < stages["backproject"]["points"]
    assert (tmp_path / "capture.png").stat().st_size > 5_000
    assert "| source |" in (tmp_path / "capture.md").read_text()


def test_render_benchmark_writes_records_and_a_plot(mvub_frames, tmp_path):
    import subprocess

    out = tmp_path / "render.json"
    result = subprocess.run(
        holoport_cmd("bench", "render", "--data", str(mvub_frames[0]), "--points", "20000", "--resolutions",
                     "1280x720", "--splats", "auto", "1", "--cores", "1", "--seconds", "0.2", "--browser",
                     "--json", str(out), "--plot", str(tmp_path / "render.png")),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(out.read_text())
    assert [(r["renderer"], r["splat"], r["cores"]) for r in records] == [("splat", "auto", 1), ("splat", "1", 1)]
    for r in records:
        assert r["points"] == 20000 and r["resolution"] == "1280x720"
        assert r["fps"] > 0 and r["ms"] == pytest.approx(1000 / r["fps"], rel=0.01)
    assert (tmp_path / "render.png").stat().st_size > 5_000


def test_codec_memory_benchmark_measures_each_operation_in_its_own_process(mvub_frames, tmp_path):
    from benchmarks import codec_memory

    out = tmp_path / "memory.json"
    assert codec_memory.main(["--data", str(mvub_frames[0].parent), "--points", "100000", "--steps", "16",
                              "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["operation"] for r in records] == ["load only", "encode", "decode"]
    load, encode, decode = records
    assert all(r["points"] >= 100_000 and r["color_step"] == 16 for r in records)
    assert load["peak_rss_mb"] <= encode["peak_rss_mb"] and load["peak_rss_mb"] <= decode["peak_rss_mb"]
    assert encode["ms"] > 0 and decode["ms"] > 0


# --- the fuzz campaign (issue 14): every target runs, writes named fields, and can fail ----------
FUZZ_FIELDS = {"target", "kind", "inputs", "crashed", "hangs", "memory", "peak_rss_mb"}


def _fuzz(tmp_path, *args: str) -> tuple:
    """``holoport bench ARGS --json --markdown``: the finished process and its records."""
    import subprocess

    out = tmp_path / "fuzz.json"
    result = subprocess.run(holoport_cmd("bench", *args, "--json", str(out), "--markdown", str(tmp_path / "fuzz.md")),
                            cwd=ROOT, capture_output=True, text=True, timeout=280)
    return result, json.loads(out.read_text()) if out.exists() else []


def _all_rows(records: list[dict]) -> dict[str, dict]:
    return {r["target"]: r for r in records if r["kind"] == "all"}


def test_fuzz_wire_sends_hostile_messages_to_a_real_hub_and_a_real_receiver(tmp_path):
    result, records = _fuzz(tmp_path, "fuzz-wire", "--inputs", "300", "--check-every", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(set(r) >= FUZZ_FIELDS for r in records)
    rows = _all_rows(records)
    assert set(rows) == {"hub", "receiver"}
    for r in rows.values():
        assert r["inputs"] == 300 and r["crashed"] == r["hangs"] == r["memory"] == 0, r
        assert 50 < r["peak_rss_mb"] < 1536
    hub, receiver = rows["hub"], rows["receiver"]
    assert {r["kind"] for r in records if r["target"] == "hub"} == {"header", "member", "frame", "garbage", "all"}
    assert hub["checks"] >= 3 and hub["stalled"] == hub["handler_errors"] == 0
    assert hub["dropped_malformed"] > 100 and hub["forwarded"] > 0 and hub["joins"] >= 3  # handlers were reached
    assert receiver["received"] > 600 and receiver["malformed"] > 0 and receiver["decode_errors"] > 0
    assert "| target |" in (tmp_path / "fuzz.md").read_text()


def test_fuzz_recording_plays_damaged_copies_against_the_ground_truth(tmp_path):
    result, records = _fuzz(tmp_path, "fuzz-recording", "--inputs", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(FUZZ_FIELDS | {"intact", "played", "lost_intact", "wrong_played", "refused"} <= set(r) for r in records)
    kinds = {r["kind"]: r for r in records}
    assert set(kinds) == {"flipped", "overwritten", "truncated", "length", "index", "forged-index", "mixed", "all"}
    total = kinds["all"]
    assert total["inputs"] == 300 and total["crashed"] == total["hangs"] == total["memory"] == 0
    assert 0 < total["played"] <= total["intact"] and total["wrong_played"] == 0
    assert kinds["truncated"]["refused"] > 0  # some cuts leave no frame: refused, as documented


def test_the_fuzz_campaign_runs_every_target_and_adds_them_up(tmp_path):
    result, records = _fuzz(tmp_path, "fuzz", "--codec", "2000", "--hub", "1200", "--receiver", "600",
                            "--recording", "600", "--scale", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _all_rows(records)
    assert set(rows) == {"codec", "hub", "receiver", "recording", "campaign"}
    assert all(FUZZ_FIELDS | {"outcome"} <= set(r) for r in records)
    assert rows["campaign"]["inputs"] == sum(r["inputs"] for t, r in rows.items() if t != "campaign") == 440
    assert rows["campaign"]["crashed"] == rows["campaign"]["hangs"] == 0


def test_the_wire_fuzzer_reports_a_receiver_that_crashes_and_a_hub_that_dies_and_goes_on(tmp_path):
    """A receiver that raises after 40 frames and a hub killed after 150 inputs: each is seen,
    named, restarted, and the run still goes through every input and fails."""
    result, records = _fuzz(tmp_path, "fuzz-wire", "--inputs", "300", "--fail-after", "40", "--kill-hub-after", "150")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = _all_rows(records)
    assert rows["receiver"]["inputs"] == rows["hub"]["inputs"] == 300
    assert rows["receiver"]["crashed"] >= 2 and rows["receiver"]["restarts"] == rows["receiver"]["crashed"]
    assert any("RuntimeError: failing on purpose" in f for f in rows["receiver"]["failures"])
    assert rows["hub"]["crashed"] == 1 and any("killed by SIGKILL" in f for f in rows["hub"]["failures"])
    assert "FAILED" in result.stdout


def test_the_recording_fuzzer_reports_a_reader_that_raises_or_hangs(monkeypatch):
    import argparse
    import time

    from benchmarks import fuzz_recording
    from holoport.sources import RecordingPoints

    calls = {"n": 0}

    def broken(self, entry):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("a bug")
        if calls["n"] == 6:
            time.sleep(5)  # past --max-seconds
        return None

    monkeypatch.setattr(RecordingPoints, "decode", broken)
    parser = argparse.ArgumentParser()
    fuzz_recording.add_arguments(parser)
    args = parser.parse_args(["--inputs", "14", "--max-seconds", "0.5"])
    rows = fuzz_recording.records(*fuzz_recording.fuzz(args, progress=False))
    total = rows[-1]
    assert total["crashed"] == 1 and total["hangs"] == 1 and fuzz_recording.failed(rows, strict=False) == 2
    assert any("KeyError: 'a bug'" in f for f in total["failures"])


def test_a_benchmark_measures_its_own_peak_memory_not_the_processs():
    """The fuzzers run inside the test process too: a peak from an earlier test is not theirs."""
    import sys

    import numpy as np

    from benchmarks.common import peak_rss_mb, reset_peak_rss

    big = np.ones(400_000_000 // 8)
    before = peak_rss_mb()
    del big
    reset_peak_rss()
    if sys.platform != "linux":
        pytest.skip("resetting the peak needs Linux's /proc/self/clear_refs")
    assert peak_rss_mb() < before - 300
